"""The tokenizer of a Hugging Face checkpoint directory, without transformers.

Reads tokenizer.json (the `tokenizers` backend), tokenizer_config.json (special tokens, chat
template), special_tokens_map.json, chat_template.jinja / chat_template.json, and the eos ids of
generation_config.json (or config.json). Encoding, decoding and chat rendering equal those of
transformers 5's AutoTokenizer (a TokenizersBackend) on the same directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers

from llm_core.chat_template import render

_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _token_content(value: Any) -> str | None:
    """A special token as written in a config: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _as_ids(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _has_byte_fallback(node: Any) -> bool:
    if isinstance(node, Mapping):
        return node.get("type") == "ByteFallback" or any(_has_byte_fallback(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_byte_fallback(v) for v in node)
    return False


def _add_config_tokens(backend: tokenizers.Tokenizer, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Add the tokens of tokenizer_config.json's added_tokens_decoder that tokenizer.json lacks."""
    added = {token.content for token in backend.get_added_tokens_decoder().values()}
    flags = ("single_word", "lstrip", "rstrip", "normalized", "special")
    backend.add_tokens([tokenizers.AddedToken(entry["content"], **{k: entry[k] for k in flags if k in entry})
                        for _, entry in sorted(entries.items(), key=lambda item: int(item[0]))
                        if entry["content"] not in added])


def _read_eos_token_ids(model_dir: Path) -> list[int]:
    """eos_token_id (an int or a list) of generation_config.json, else of config.json."""
    generation = _read_json(model_dir / "generation_config.json")
    if "eos_token_id" in generation:
        return _as_ids(generation["eos_token_id"])
    model_config = _read_json(model_dir / "config.json")
    return _as_ids(model_config.get("eos_token_id", model_config.get("text_config", {}).get("eos_token_id")))


def _read_chat_template(model_dir: Path, config: Mapping[str, Any]) -> str | dict[str, str] | None:
    # Separate template files take priority over the config's entry, as in transformers.
    templates: dict[str, str] = {}
    if (model_dir / "chat_template.jinja").is_file():
        templates["default"] = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    extra_dir = model_dir / "additional_chat_templates"
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            templates[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    template = config.get("chat_template")
    if template is None:  # older processors save it alone in chat_template.json
        template = _read_json(model_dir / "chat_template.json").get("chat_template")
    if isinstance(template, list):
        return {entry["name"]: entry["template"] for entry in template}
    return template


class Tokenizer:
    """Text <-> token ids and chat rendering for one model.

    The constructor takes a `tokenizers.Tokenizer` (which it owns from then on) and registers
    the named special tokens (`special_tokens`: "bos_token", "eos_token", "image_token", ...)
    and `extra_special_tokens` as special added tokens where the backend does not have them yet,
    as transformers does. Immutable afterwards. Attributes:
    - bos_token_id: int | None; eos_token_ids: the eos token's id, then extra_eos_token_ids
      (from generation_config.json), without repeats;
    - all_special_ids: sorted ids of the named and extra special tokens and of every added
      token marked special; skipped_token_ids: those that decode(skip_special_tokens=True) drops;
    - byte_token_ids: the <0xNN> tokens that the decoder turns into bytes (sentencepiece byte
      fallback); empty for byte-level BPE.
    """

    def __init__(self, backend: tokenizers.Tokenizer, *, special_tokens: Mapping[str, str] | None = None,
                 extra_special_tokens: Sequence[str] = (), chat_template: str | Mapping[str, str] | None = None,
                 extra_eos_token_ids: Sequence[int] = ()) -> None:
        self.backend = backend
        self.special_tokens = dict(special_tokens or {})
        self.chat_template = dict(chat_template) if isinstance(chat_template, Mapping) else chat_template
        added = {token.content for token in backend.get_added_tokens_decoder().values()}
        missing = [t for t in (*self.special_tokens.values(), *extra_special_tokens) if t not in added]
        if missing:
            backend.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                                        for t in dict.fromkeys(missing)])
        self.skipped_token_ids = frozenset(i for i, t in backend.get_added_tokens_decoder().items() if t.special)
        named = (self.token_to_id(t) for t in (*self.special_tokens.values(), *extra_special_tokens))
        self.all_special_ids = tuple(sorted(self.skipped_token_ids.union(i for i in named if i is not None)))
        self.bos_token_id = self._named_id("bos_token")
        eos = [self._named_id("eos_token"), *extra_eos_token_ids]
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(i for i in eos if i is not None))
        self.byte_token_ids = self._find_byte_token_ids()

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> Tokenizer:
        """Load the tokenizer of a checkpoint directory; FileNotFoundError without tokenizer.json.

        add_bos_token/add_eos_token in tokenizer_config.json do not override tokenizer.json's
        post-processor (transformers 5 ignores them too when tokenizer.json exists).
        """
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer.json not found in {model_dir} (a fast tokenizer file is required)")
        backend = tokenizers.Tokenizer.from_file(str(path))
        config = _read_json(model_dir / "tokenizer_config.json")
        if "added_tokens_decoder" in config:
            _add_config_tokens(backend, config["added_tokens_decoder"])
        else:  # legacy: special_tokens_map.json overrides the config's entries
            config.update(_read_json(model_dir / "special_tokens_map.json"))
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        named = {key: _token_content(value) for key, value in config.items() if key.endswith("_token")}
        if isinstance(extra, Mapping):  # model-specific names, e.g. {"image_token": "<image>"}
            named.update({key: _token_content(value) for key, value in extra.items()})
            extra = []
        return cls(backend, special_tokens={k: v for k, v in named.items() if v is not None},
                   extra_special_tokens=[t for t in map(_token_content, extra) if t is not None],
                   chat_template=_read_chat_template(model_dir, config),
                   extra_eos_token_ids=_read_eos_token_ids(model_dir))

    def _named_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.token_to_id(token)

    def _find_byte_token_ids(self) -> frozenset[int]:
        # <0xNN> tokens matter only where the decoder turns them into bytes (sentencepiece byte fallback).
        decoder = json.loads(self.backend.to_str()).get("decoder")
        if not _has_byte_fallback(decoder):
            return frozenset()
        vocab = self.backend.get_vocab(with_added_tokens=False)
        return frozenset(i for token, i in vocab.items() if _BYTE_TOKEN.fullmatch(token))

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (len() of a transformers tokenizer)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, token_ids: Sequence[int]) -> list[str | None]:
        return [self.backend.id_to_token(i) for i in token_ids]

    def get_chat_template(self, chat_template: str | None = None, has_tools: bool = False) -> str:
        """The template source to render, chosen as transformers does: `chat_template` names one
        of the model's templates or is a template itself; by default the model's template, or of
        several its "tool_use" one when tools are given, else its "default" one."""
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template is not None:
                return templates.get(chat_template, chat_template)
            key = "tool_use" if has_tools and "tool_use" in templates else "default"
            if key not in templates:
                raise ValueError(f"this model has several chat templates and no 'default': {sorted(templates)}")
            return templates[key]
        if chat_template is not None:
            return chat_template
        if templates is None:
            raise ValueError("this model has no chat template (none in tokenizer_config.json or chat_template.jinja)")
        return templates

    def apply_chat_template(self, messages: list[Mapping[str, Any]], add_generation_prompt: bool = True,
                            *, chat_template: str | None = None, tools: list[dict] | None = None,
                            **extra: Any) -> str:
        """The prompt text of `messages` (as transformers' apply_chat_template(tokenize=False)).

        `chat_template` names a template of the model or is one (see get_chat_template); `extra`
        reaches the template as variables (e.g. enable_thinking). A template error raises ValueError.
        """
        if not messages:
            raise ValueError("cannot render an empty conversation")
        template = self.get_chat_template(chat_template, has_tools=tools is not None)
        variables = {**self.special_tokens, **extra}
        return render(template, messages, add_generation_prompt=add_generation_prompt, tools=tools, **variables)
