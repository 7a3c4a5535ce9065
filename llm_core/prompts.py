"""Prompts of the offline API and the engine: text, token ids, or OpenAI-style chat."""

from __future__ import annotations

from typing import Any, Union

from llm_core.tokenizer import Tokenizer

Prompt = Union[str, list[int], dict[str, Any]]

MEDIA_PART_TYPES = ("image", "audio", "video", "item")


def render_prompt(prompt: Prompt, tokenizer: Tokenizer) -> list[int]:
    """Token ids for a prompt: a string, a list of token ids, {"prompt": str},
    {"prompt_token_ids": [...]}, or a chat {"messages": [...]} rendered with the model's
    chat template. Media parts need a multimodal model (not a text-only checkpoint)."""
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if isinstance(prompt, list):
        return _check_ids(prompt, tokenizer)
    if isinstance(prompt, dict):
        if "messages" in prompt:
            text = tokenizer.apply_chat_template(normalize_messages(prompt["messages"]), add_generation_prompt=True)
            return tokenizer.encode(text, add_special_tokens=False)
        if "prompt_token_ids" in prompt:
            return _check_ids(list(prompt["prompt_token_ids"]), tokenizer)
        if "prompt" in prompt:
            return tokenizer.encode(prompt["prompt"])
        raise ValueError("a prompt dict needs 'messages', 'prompt' or 'prompt_token_ids'")
    raise TypeError(f"a prompt is a str, a list of token ids or a dict, not {type(prompt).__name__}")


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate chat messages; text-only content lists collapse to one string (what most templates expect)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(f"messages[{i}] must be a dict with a 'role'")
        content = message.get("content", "")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in MEDIA_PART_TYPES:
                    raise ValueError(f"messages[{i}].content[{j}] is {kind!r} media, which this text-only model "
                                     "cannot take")
                if kind != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(f"messages[{i}].content[{j}] must be {{'type': 'text', 'text': str}}")
            content = "".join(part["text"] for part in content)
        elif not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string or a list of parts")
        out.append({**message, "content": content})
    return out


def _check_ids(ids: list, tokenizer: Tokenizer) -> list[int]:
    if not ids:
        raise ValueError("the prompt is empty")
    for i, token in enumerate(ids):
        if not isinstance(token, int) or isinstance(token, bool) or token < 0:
            raise ValueError(f"prompt token {i} is not a non-negative integer: {token!r}")
    return ids
