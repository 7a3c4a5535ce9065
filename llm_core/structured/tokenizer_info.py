"""TokenizerInfo: the raw bytes each token id stands for, which is what grammars constrain.

Vocabulary types:
- "byte_level" (GPT-2, Llama 3, Qwen): each character of a token is one byte via the GPT-2
  byte<->unicode table;
- "metaspace" (SentencePiece: Llama 2, Mistral): '▁' is a space, `<0xNN>` is the byte NN;
- "raw": the token text is its UTF-8.
Added and special tokens get no bytes (None): they are never allowed inside a structure; the EOS ids
are allowed exactly where the structure is complete. The model's logits may be wider than the
vocabulary (`vocab_size`); ids without a token are never allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from functools import cached_property, lru_cache

from .errors import StructuredOutputError

VOCAB_TYPES = ("byte_level", "metaspace", "raw")
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def gpt2_unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other
    bytes to U+0100 onwards in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(0x100 + extra)] = b
            extra += 1
    return table


def decode_token(text: str, vocab_type: str) -> bytes | None:
    """The bytes of one vocabulary entry, or None when it has none (not decodable)."""
    if vocab_type == "byte_level":
        table = gpt2_unicode_to_byte()
        if not all(ch in table for ch in text):
            return None
        return bytes(table[ch] for ch in text)
    if vocab_type == "metaspace":
        if m := _BYTE_FALLBACK.fullmatch(text):
            return bytes([int(m.group(1), 16)])
        return text.replace("\u2581", " ").encode("utf-8")
    if vocab_type == "raw":
        return text.encode("utf-8")
    raise ValueError(f"vocab_type must be one of {VOCAB_TYPES}, got {vocab_type!r}")


class TokenizerInfo:
    """Immutable: token id -> bytes (None: never allowed), the EOS ids and the logits width."""

    def __init__(self, token_bytes: list[bytes | None], eos_token_ids: Iterable[int],
                 vocab_size: int | None = None):
        self.eos_token_ids = tuple(sorted(set(int(i) for i in eos_token_ids)))
        eos = set(self.eos_token_ids)
        # EOS never stands for text, even when the vocabulary gives it some.
        self.token_bytes: tuple[bytes | None, ...] = tuple(
            None if b is None or len(b) == 0 or i in eos else bytes(b) for i, b in enumerate(token_bytes))
        self.vocab_size = len(self.token_bytes) if vocab_size is None else vocab_size
        if self.vocab_size < len(self.token_bytes):
            raise ValueError(f"vocab_size {self.vocab_size} is below the {len(self.token_bytes)} tokens")
        if not self.eos_token_ids:
            raise ValueError("at least one EOS token id is needed")
        for i in self.eos_token_ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"EOS token id {i} is outside the vocabulary of {self.vocab_size}")

    @classmethod
    def from_vocab(cls, vocab: list[str | None], *, vocab_type: str, eos_token_ids: Iterable[int],
                   special_token_ids: Iterable[int] = (), vocab_size: int | None = None) -> TokenizerInfo:
        """From token strings indexed by id (None for an unused id)."""
        special = set(special_token_ids)
        token_bytes = [None if text is None or i in special else decode_token(text, vocab_type)
                       for i, text in enumerate(vocab)]
        return cls(token_bytes, eos_token_ids, vocab_size)

    @classmethod
    def from_tokenizers(cls, tokenizer, eos_token_ids: Iterable[int],
                        vocab_size: int | None = None) -> TokenizerInfo:
        """From a `tokenizers.Tokenizer` (what tokenizer.json loads into)."""
        config = json.loads(tokenizer.to_str())
        vocab_type = detect_vocab_type(config)
        pieces = tokenizer.get_vocab(with_added_tokens=True)
        size = max(pieces.values(), default=-1) + 1
        vocab: list[str | None] = [None] * size
        for text, i in pieces.items():
            vocab[i] = text
        added = [t["id"] for t in config.get("added_tokens") or ()]
        return cls.from_vocab(vocab, vocab_type=vocab_type, eos_token_ids=eos_token_ids,
                              special_token_ids=added, vocab_size=vocab_size)

    @cached_property
    def vocab_hash(self) -> str:
        """sha256 of everything masks depend on: the bytes of each id, the EOS ids, the width."""
        h = hashlib.sha256()
        h.update(json.dumps([self.vocab_size, self.eos_token_ids]).encode())
        for b in self.token_bytes:
            h.update(b"\xff" if b is None else len(b).to_bytes(4, "little") + b)
        return h.hexdigest()

    @property
    def bitmask_width(self) -> int:
        """int32 words per bitmask row: ceil(vocab_size / 32)."""
        return (self.vocab_size + 31) // 32


def detect_vocab_type(config: dict) -> str:
    """The vocab type of a parsed tokenizer.json, from its decoder (or pre-tokenizer)."""
    model = config.get("model") or {}
    kinds = _types(config.get("decoder")) or _types(config.get("pre_tokenizer"))
    if "ByteLevel" in kinds:
        return "byte_level"
    if kinds & {"Metaspace", "ByteFallback"} or model.get("byte_fallback") or \
            "\u2581" in json.dumps(config.get("decoder"), ensure_ascii=False):
        return "metaspace"
    if model.get("type") == "WordPiece" or "WordPiece" in kinds:
        raise StructuredOutputError("WordPiece tokenizers are not supported for structured output")
    return "raw"


def _types(node) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            found.add(node["type"])
        for value in node.values():
            found |= _types(value)
    elif isinstance(node, list):
        for value in node:
            found |= _types(value)
    return found
