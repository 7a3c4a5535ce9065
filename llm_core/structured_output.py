"""Engine side of structured output: compile off the step loop, mask logits, advance matchers.

A constrained request waits outside the scheduler until its grammar has compiled in the
background (other requests keep decoding meanwhile). From then on each of its sampling rows
gets a token bitmask from its matcher, applied to the logits on the device in one batched op,
and every sampled token advances the matcher. The matcher depends only on the accepted output
tokens, so it survives preemption by recompute untouched.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Sequence

import torch

from llm_core.sampling_params import SamplingParams
from llm_core.structured import (GrammarCompiler, GrammarMatcher, GrammarSpec, TokenizerInfo,
                                 allocate_token_bitmask, apply_token_bitmask, compile_for_tokenizer)
from llm_core.tokenizer import Tokenizer
from llm_core.transfer import to_device


class StructuredOutputManager:
    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_token_ids: Sequence[int], *,
                 cache_dir: str | None = None, max_workers: int = 1) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos_token_ids = tuple(eos_token_ids)
        self._cache_dir = cache_dir
        self._info: TokenizerInfo | None = None
        self._compiler = GrammarCompiler(max_workers)
        self._pending: dict[str, Future] = {}
        self._matchers: dict[str, GrammarMatcher] = {}

    @staticmethod
    def spec_for(params: SamplingParams) -> GrammarSpec | None:
        """The grammar a request asks for; a malformed response_format raises StructuredOutputError."""
        return GrammarSpec.from_response_format(params.response_format)

    def validate(self, params: SamplingParams) -> None:
        """Compile the request's grammar now (memoized), so an impossible or unsupported schema raises here."""
        spec = self.spec_for(params)
        if spec is not None:
            spec.compile()

    @property
    def tokenizer_info(self) -> TokenizerInfo:
        if self._info is None:
            self._info = TokenizerInfo.from_tokenizers(self._tokenizer.backend, self._eos_token_ids,
                                                       vocab_size=self._vocab_size)
        return self._info

    def submit(self, request_id: str, params: SamplingParams) -> bool:
        """Start compiling the request's grammar; False if it has none."""
        spec = self.spec_for(params)
        if spec is None:
            return False
        info = self.tokenizer_info
        self._pending[request_id] = self._compiler.submit(
            f"{spec.key}:{id(info)}", lambda: compile_for_tokenizer(spec, info, cache_dir=self._cache_dir))
        return True

    def poll(self) -> tuple[list[str], dict[str, str]]:
        """Requests whose grammar is ready (their matcher now exists), and those whose compile failed."""
        ready, failed = [], {}
        for request_id, future in list(self._pending.items()):
            if not future.done():
                continue
            del self._pending[request_id]
            error = future.exception()
            if error is not None:
                failed[request_id] = f"{type(error).__name__}: {error}"
            else:
                self._matchers[request_id] = GrammarMatcher(future.result())
                ready.append(request_id)
        return ready, failed

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    def has_matcher(self, request_id: str) -> bool:
        return request_id in self._matchers

    def apply_masks(self, logits: torch.Tensor, request_ids: Sequence[str],
                    draft_token_ids: Sequence[Sequence[int]] | None = None) -> None:
        """Mask, in place, the logits rows of constrained requests. Request i owns
        1 + len(draft_token_ids[i]) consecutive rows: the mask after each draft prefix (the
        drafts must be ones its grammar accepts; see num_valid_draft_tokens). Matchers are unchanged."""
        drafts = draft_token_ids if draft_token_ids is not None else [()] * len(request_ids)
        starts = [0]
        for d in drafts:
            starts.append(starts[-1] + len(d) + 1)
        constrained = [i for i, rid in enumerate(request_ids) if rid in self._matchers]
        if not constrained:
            return
        bitmask = allocate_token_bitmask(starts[-1], logits.shape[-1])
        rows = []
        for i in constrained:
            num_valid = self._matchers[request_ids[i]].fill_draft_bitmasks(drafts[i], bitmask, starts[i])
            if num_valid != len(drafts[i]):
                raise RuntimeError(f"request {request_ids[i]!r}: a draft token breaks its grammar")
            rows.extend(range(starts[i], starts[i + 1]))
        apply_token_bitmask(logits, to_device(bitmask, logits.device), rows)

    def num_valid_draft_tokens(self, request_id: str, draft_token_ids: Sequence[int]) -> int:
        """How many leading draft tokens the request's grammar accepts (all without a grammar);
        the proposer's drafts are cut there. A draft never ends the grammar (no token could follow
        it, not even the bonus token), so the cut falls before an ending EOS. The matcher is left
        unchanged."""
        matcher = self._matchers.get(request_id)
        if matcher is None:
            return len(draft_token_ids)
        num_accepted = matcher.accept_tokens(draft_token_ids)
        num_valid = num_accepted - 1 if matcher.is_terminated() else num_accepted
        matcher.rollback(num_accepted)
        return num_valid

    def apply_proposal_masks(self, logits: torch.Tensor, request_ids: Sequence[str],
                             draft_prefixes: Sequence[Sequence[int]]) -> list[bool]:
        """For a proposer drafting under grammars: mask row i of logits, in place, to the tokens
        that request i's grammar allows after its accepted tokens and draft_prefixes[i], less
        those that would end the grammar (see num_valid_draft_tokens). Returns per row whether
        a token is left; a row with none (the grammar allows only its end) is left unmasked and
        must draft no further. Unconstrained rows are untouched (True). Matchers are unchanged."""
        live = [True] * len(request_ids)
        bitmask = allocate_token_bitmask(len(request_ids), logits.shape[-1])
        rows = []
        for i, request_id in enumerate(request_ids):
            matcher = self._matchers.get(request_id)
            if matcher is None:
                continue
            num_accepted = matcher.accept_tokens(draft_prefixes[i])
            mask = matcher.next_token_mask() & ~matcher.compiled.eos_mask
            matcher.rollback(num_accepted)
            if num_accepted != len(draft_prefixes[i]):
                raise RuntimeError(f"request {request_id!r}: a draft token breaks its grammar")
            if not mask.any():
                live[i] = False
                continue
            bitmask[i] = torch.from_numpy(mask)
            rows.append(i)
        if rows:
            apply_token_bitmask(logits, to_device(bitmask, logits.device), rows)
        return live

    def accept(self, request_id: str, token_id: int) -> bool:
        """Advance the request's matcher; False means the token broke the grammar (a bug upstream)."""
        matcher = self._matchers.get(request_id)
        return True if matcher is None else matcher.accept_token(token_id)

    def is_terminated(self, request_id: str) -> bool:
        matcher = self._matchers.get(request_id)
        return matcher is not None and matcher.is_terminated()

    def free(self, request_id: str) -> None:
        self._matchers.pop(request_id, None)
        future = self._pending.pop(request_id, None)
        if future is not None:
            future.cancel()

    def shutdown(self) -> None:
        self._compiler.shutdown(wait=False)
