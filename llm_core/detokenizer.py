"""Incremental detokenization of one request's output, with stop strings.

Decoding the whole output at every step costs O(length) per token. Instead only a window is
decoded: `_prefix_offset` .. `_read_offset` are tokens whose text was already emitted (context
that the decoder may need, e.g. for sentencepiece's leading space), and the tokens after
`_read_offset` are new. The text of the new tokens is the decode of the whole window minus the
decode of its context. Text is committed only at clean boundaries:
- not while the decoded window ends in U+FFFD (an incomplete UTF-8 sequence, which the next
  token may complete);
- not inside a trailing run of <0xNN> byte-fallback tokens: the decoder turns a run into text
  only if the whole run is valid UTF-8 (otherwise into one U+FFFD per byte), so a later byte
  can change the text of earlier ones.
At such boundaries decoding is compositional, so the concatenated deltas (and flush()) equal
tokenizer.decode(output_ids) exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_core.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turns one request's output token ids into text deltas and finds stop strings.

    add_tokens() returns the new text; flush() returns what is still held back, at the end.
    With stop strings, the last max(len(stop)) - 1 characters stay held back (they may begin a
    stop string); once a stop string appears, the text is cut before it (after it with
    include_stop_str_in_output), `stop_reason` names it and later tokens are ignored.
    `prompt_token_ids` are not decoded: the text is that of the output alone, as
    tokenizer.decode(output_ids, skip_special_tokens) gives it.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: Sequence[int], skip_special_tokens: bool = True,
                 stop: Sequence[str] = (), include_stop_str_in_output: bool = False) -> None:
        self.tokenizer = tokenizer
        self.num_prompt_tokens = len(prompt_token_ids)
        self.skip_special_tokens = skip_special_tokens
        self.stop = tuple(s for s in stop if s)
        self.include_stop_str_in_output = include_stop_str_in_output
        self.stop_reason: str | None = None
        self.token_ids: list[int] = []
        self._num_held = max(map(len, self.stop), default=1) - 1  # characters held back for stop strings
        self._byte_token_ids = tokenizer.byte_token_ids
        self._skipped_ids = tokenizer.skipped_token_ids if skip_special_tokens else frozenset()
        self._prefix_offset = 0
        self._read_offset = 0
        self._prefix_text = ""  # decode of token_ids[_prefix_offset:_read_offset]
        self._run_start: int | None = None  # first token of a trailing run of byte tokens
        self._emitted: list[str] = []  # text returned so far, in pieces
        self._pending = ""  # committed text not returned yet (held back for stop strings)

    @property
    def is_stopped(self) -> bool:
        return self.stop_reason is not None

    @property
    def text(self) -> str:
        """The output text so far: what was returned plus what is held back for stop strings."""
        return "".join(self._emitted) + self._pending

    def add_tokens(self, new_token_ids: Sequence[int]) -> str:
        """Append sampled tokens; returns the text they complete (possibly "")."""
        if self.is_stopped:
            return ""
        for token_id in new_token_ids:
            self._track_byte_run(token_id)
            self.token_ids.append(token_id)
        if all(token_id in self._skipped_ids for token_id in new_token_ids):
            return ""  # nothing to decode: skipped tokens add no text
        end = len(self.token_ids) if self._run_start is None else self._run_start
        self._pending += self._decode_new(end, final=False)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end of the request: the text held back (incomplete characters included)."""
        if not self.is_stopped:
            self._pending += self._decode_new(len(self.token_ids), final=True)
            self._run_start = None
        return self._release(final=True)

    def _track_byte_run(self, token_id: int) -> None:
        if token_id in self._byte_token_ids:
            if self._run_start is None:
                self._run_start = len(self.token_ids)
        elif token_id not in self._skipped_ids:  # skipped tokens vanish before the decoder runs
            self._run_start = None

    def _decode_new(self, end: int, final: bool) -> str:
        """Text of token_ids[_read_offset:end]; moves the window when it commits."""
        if end <= self._read_offset:
            return ""
        window = self.token_ids[self._prefix_offset:end]
        text = self.tokenizer.decode(window, skip_special_tokens=self.skip_special_tokens)
        if not final and (len(text) <= len(self._prefix_text) or text.endswith(_REPLACEMENT)):
            return ""
        delta = text[len(self._prefix_text):]
        self._prefix_offset, self._read_offset = self._read_offset, end
        self._prefix_text = self.tokenizer.decode(self.token_ids[self._prefix_offset:end],
                                                  skip_special_tokens=self.skip_special_tokens)
        return delta

    def _release(self, final: bool) -> str:
        """Find stop strings in the pending text; return what may be emitted now."""
        # Matches that end before the pending text were looked for at earlier steps, and the
        # pending text starts at most max(len(stop)) - 1 characters back, so searching it finds
        # every new match.
        if self.stop:
            found = [(i, s) for s in self.stop if (i := self._pending.find(s)) >= 0]
            if found:
                index, stop = min(found, key=lambda item: item[0])
                self.stop_reason = stop
                self._pending = self._pending[:index + (len(stop) if self.include_stop_str_in_output else 0)]
                final = True
        if final or not self._num_held:
            out, self._pending = self._pending, ""
        else:
            num_out = max(0, len(self._pending) - self._num_held)
            out, self._pending = self._pending[:num_out], self._pending[num_out:]
        if out:
            self._emitted.append(out)
        return out
