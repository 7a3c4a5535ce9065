"""Chat templates: Jinja rendered the way transformers renders them, in a sandbox.

The environment matches transformers' (`apply_chat_template`): an immutable sandbox with
trim_blocks, lstrip_blocks and the loopcontrols extension; globals `raise_exception`,
`strftime_now`, a `dict` constructor and a `namespace` that refuses underscore names; a `tojson`
filter that does not escape HTML and takes ensure_ascii, indent, separators and sort_keys.
Compiled templates are cached by their source.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Names a message's reasoning goes by; templates read `reasoning_content` (Qwen3) or `thinking`.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# Errors that a template raises on data it does not expect (a user's error, not ours).
_DATA_ERRORS = (TypeError, LookupError, ArithmeticError, AttributeError)


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _SafeDict:
    """`dict(...)` for templates without exposing the dict type itself."""

    def __call__(self, *args, **kwargs) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _SafeNamespace(jinja2.utils.Namespace):
    """A jinja `namespace()` that refuses attributes starting with an underscore."""

    def __init__(*args, **kwargs):  # noqa: N805 - `self` may be a keyword, as in jinja's Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _SafeNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _SafeNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a template namespace cannot hold {name!r}")


@functools.lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_SafeDict(),
                       namespace=_SafeNamespace)
    return env


@functools.lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template for `source` (cached); a syntax error raises ValueError."""
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"chat template syntax error (line {exc.lineno}): {exc.message}") from exc


def _plain(value: Any) -> Any:
    # Templates only see JSON-like data: rich objects (images, arrays) become "<TypeName>"
    # placeholders, so the sandbox never meets their methods. Templates test media keys for
    # presence and never print their values, so the output does not change.
    if value is None or type(value) in (str, int, float, bool):
        return value
    for base in (str, int, float):  # subclasses (enums, numpy floats) lose their methods
        if isinstance(value, base):
            return base(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    return f"<{type(value).__name__}>"


def _prepare_message(message: Any) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise ValueError(f"a chat message must be a dict, not {type(message).__name__}")
    # Keys set to None are left out, as transformers does: templates test for presence.
    message = {key: _plain(value) for key, value in message.items() if value is not None}
    reasoning = next((message[key] for key in _REASONING_FIELDS if key in message), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


def render(template: str, messages: list[Mapping[str, Any]], add_generation_prompt: bool = False,
           bos_token: str | None = None, eos_token: str | None = None, **extra: Any) -> str:
    """Render a chat template over `messages` as transformers' apply_chat_template(tokenize=False).

    Message content (a string, or a list of parts such as {"type": "text", "text": ...} and
    {"type": "image"}) reaches the template as given. A bos/eos token that is None is left
    undefined (as in transformers); `tools` and `documents` default to None.
    Any error of the template (raise_exception, undefined names, bad data) raises ValueError
    with the template's message. Does not modify `messages`.
    """
    compiled = compile_template(template)
    variables = {"tools": None, "documents": None}
    variables.update({key: _plain(value) for key, value in extra.items()})
    for name, token in (("bos_token", bos_token), ("eos_token", eos_token)):
        if token is not None:
            variables[name] = token
    chat = [_prepare_message(message) for message in messages]
    try:
        return compiled.render(messages=chat, add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.TemplateError as exc:
        raise ValueError(f"chat template error: {exc.message or exc}") from exc
    except _DATA_ERRORS as exc:
        raise ValueError(f"chat template failed on these messages: {type(exc).__name__}: {exc}") from exc
