"""From protocol requests to engine requests and from engine deltas back: shared by the WebSocket
sessions and the OpenAI-compatible endpoint.

Nothing here does I/O; `check_response_format` compiles a grammar, so callers run it in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from llm_core.engine_client import CompletionDelta, SamplingParams
from llm_core.structured.errors import StructuredOutputError
from llm_core.structured.grammar_spec import GrammarSpec
from protocol import ChatMessage, GenerationOptions, ItemPart, ProtocolError, ResponseFormat, Usage
from protocol.errors import CONTEXT_LENGTH_EXCEEDED, INVALID_FIELD, INVALID_SCHEMA

# Engine finish_reason -> (response.done status, protocol finish_reason)
_FINISH = {"stop": ("completed", "stop"), "length": ("incomplete", "length"),
           "abort": ("cancelled", "cancelled"), "error": ("failed", "error")}


@dataclass(frozen=True)
class MediaData:
    """A decoded item as the engine's chat parts take it: image uint8 [H, W, 3], video a list of
    such frames, audio (float32 samples [S], sample_rate). engine_item_id: the engine already holds
    the item under this id (a streamed video), so the part names it and the data stays here."""

    modality: str
    data: Any
    engine_item_id: str | None = None


def sampling_params(options: GenerationOptions, response_format: ResponseFormat | None,
                    max_model_len: int) -> SamplingParams:
    """Engine sampling settings for resolved options; unset max_tokens means up to the context.

    Raises ProtocolError (context_length_exceeded) when max_tokens alone leaves no room for a prompt.
    """
    max_tokens = options.max_tokens if options.max_tokens is not None else max_model_len
    if options.max_tokens is not None and options.max_tokens >= max_model_len:
        raise ProtocolError(CONTEXT_LENGTH_EXCEEDED, f"max_tokens={options.max_tokens} leaves no room for "
                            f"a prompt in the model's context of {max_model_len} tokens", field="max_tokens")
    rf = None if response_format is None or response_format.type == "text" else response_format.to_wire()
    try:
        return SamplingParams(max_tokens=max_tokens, temperature=options.temperature, top_p=options.top_p,
                              top_k=options.top_k, min_p=options.min_p, seed=options.seed,
                              stop=options.stop or (), ignore_eos=bool(options.ignore_eos),
                              logprobs=options.logprobs, response_format=rf)
    except ValueError as exc:
        raise ProtocolError(INVALID_FIELD, str(exc).removeprefix("SamplingParams.")) from None


def check_response_format(response_format: ResponseFormat | None, field: str = "response_format") -> None:
    """Compiles the format's grammar (cheap, memoized by the engine later); raises ProtocolError
    invalid_schema naming what cannot be compiled. Blocks: call it from a worker thread."""
    if response_format is None or response_format.type == "text":
        return
    try:
        spec = GrammarSpec.from_response_format(response_format.to_wire())
        if spec is not None:
            spec.compile()
    except StructuredOutputError as exc:
        raise ProtocolError(INVALID_SCHEMA, f"{field}: {exc}", field=field) from None
    except RecursionError:
        raise ProtocolError(INVALID_SCHEMA, f"{field} is nested too deeply to compile", field=field) from None


def chat_prompt(messages: Sequence[ChatMessage], instructions: str | None,
                media: Mapping[str, MediaData]) -> dict[str, Any]:
    """The engine's chat prompt: item parts replaced by their decoded media; `instructions`
    becomes the system message when the messages hold none."""
    out: list[dict[str, Any]] = []
    if instructions and not any(message.role == "system" for message in messages):
        out.append({"role": "system", "content": instructions})
    for message in messages:
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
            continue
        parts = []
        for part in message.content:
            if isinstance(part, ItemPart):
                item = media[part.item_id]
                if item.engine_item_id is not None:
                    parts.append({"type": "item", "item_id": item.engine_item_id})
                else:
                    parts.append({"type": item.modality, item.modality: item.data})
            else:
                parts.append({"type": "text", "text": part.text})
        out.append({"role": message.role, "content": parts})
    return {"messages": out}


def wire_logprobs(delta: CompletionDelta) -> tuple | None:
    """Per token, (token_id, logprob) pairs with the sampled token first (the wire's shape)."""
    if delta.logprobs is None:
        return None
    rows = []
    for token_id, row in zip(delta.new_token_ids, delta.logprobs):
        pairs = [(token_id, float(row[token_id]))] if token_id in row else []
        pairs += [(int(t), float(lp)) for t, lp in row.items() if t != token_id]
        rows.append(tuple(pairs))
    return tuple(rows)


class UsageCounter:
    """Tokens of one response so far, from its deltas."""

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0

    def add(self, delta: CompletionDelta) -> None:
        self.output_tokens += len(delta.new_token_ids)
        if delta.num_prompt_tokens:
            self.input_tokens = delta.num_prompt_tokens
            self.cached_tokens = delta.num_cached_tokens

    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.output_tokens, self.cached_tokens)


def finish_status(finish_reason: str | None) -> tuple[str, str | None]:
    """(response.done status, protocol finish_reason) for an engine finish_reason."""
    return _FINISH.get(finish_reason or "error", ("failed", "error"))
