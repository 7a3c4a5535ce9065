"""Content hashes of full KV blocks, the keys of the prefix cache.

A block's hash covers its parent's hash, its token ids and its extra keys, so equal hashes
mean equal whole prefixes (up to a 128-bit collision). Multimodal prompts repeat the same
placeholder token id for every image or audio position; the media content hashes enter as
extra keys, so the same placeholders with a different image give a different hash.

Hashes are blake2b digests of a canonical byte encoding: the same input gives the same hash
in every process and on every run (Python's hash() is salted per process and never used).
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

BlockHash = bytes

BLOCK_HASH_NUM_BYTES = 16
_PERSON = b"tributary.kv.v1"  # domain separation; bump when the encoding changes


@dataclass(frozen=True)
class MediaSpan:
    """A run of `length` placeholder tokens starting at token position `offset` whose
    embeddings come from one media item identified by `content_hash`."""

    offset: int
    length: int
    content_hash: str

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise ValueError(f"MediaSpan.offset must be >= 0, got {self.offset}")
        if self.length <= 0:
            raise ValueError(f"MediaSpan.length must be > 0, got {self.length}")
        if not isinstance(self.content_hash, str) or not self.content_hash:
            raise ValueError("MediaSpan.content_hash must be a non-empty str")

    @property
    def end(self) -> int:
        return self.offset + self.length


def hash_block_tokens(
    parent: BlockHash | None, token_ids: Sequence[int], extra_keys: tuple = ()
) -> BlockHash:
    """Hash one full block chained to its parent (None for the first block).

    extra_keys may hold None, bool, int, float, str, bytes and tuples of these; any change
    in them changes the hash. Other types raise TypeError.
    """
    hasher = hashlib.blake2b(digest_size=BLOCK_HASH_NUM_BYTES, person=_PERSON)
    if parent is None:
        hasher.update(b"\x00")
    else:
        if len(parent) != BLOCK_HASH_NUM_BYTES:
            raise ValueError(f"parent hash must be {BLOCK_HASH_NUM_BYTES} bytes, got {len(parent)}")
        hasher.update(b"\x01")
        hasher.update(parent)
    num_tokens = len(token_ids)
    hasher.update(struct.pack("<Q", num_tokens))
    hasher.update(struct.pack(f"<{num_tokens}q", *token_ids))
    hasher.update(_encode_key(tuple(extra_keys)))
    return hasher.digest()


def extend_block_hashes(
    block_hashes: list[BlockHash],
    token_ids: Sequence[int],
    block_size: int,
    media_spans: Sequence[MediaSpan] = (),
) -> None:
    """Append to `block_hashes` the hash of every block that became full since the last call.

    Incremental: blocks below len(block_hashes) are taken as already hashed from the same
    token ids; a partial last block is never hashed. A block's extra keys name each media
    span that overlaps it, in order of offset, as (content_hash, block start - span offset);
    the second item is the block's offset inside the span (negative when the span starts
    inside the block), so the same item at another alignment hashes differently.
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    num_full_blocks = len(token_ids) // block_size
    if len(block_hashes) >= num_full_blocks:
        return
    spans = sorted(media_spans, key=lambda span: span.offset)
    for previous, span in zip(spans, spans[1:]):
        if span.offset < previous.end:
            raise ValueError(f"media spans overlap: {previous} and {span}")
    span_ends = [span.end for span in spans]
    parent = block_hashes[-1] if block_hashes else None
    for block_index in range(len(block_hashes), num_full_blocks):
        start = block_index * block_size
        end = start + block_size
        extra_keys = _media_keys(spans, span_ends, start, end)
        parent = hash_block_tokens(parent, token_ids[start:end], extra_keys)
        block_hashes.append(parent)


def _media_keys(
    spans: list[MediaSpan], span_ends: list[int], start: int, end: int
) -> tuple:
    # Spans are sorted by offset; those ending at or before `start` cannot overlap. Spans do
    # not overlap each other, so their ends are sorted as well and bisect finds the first
    # candidate.
    keys = []
    for span in spans[bisect.bisect_right(span_ends, start):]:
        if span.offset >= end:
            break
        if span.end > start:
            keys.append((span.content_hash, start - span.offset))
    return tuple(keys)


def _encode_key(value: object) -> bytes:
    # Tag + length-prefixed payload: no two different values share an encoding.
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        digits = str(value).encode()
        return b"i" + struct.pack("<I", len(digits)) + digits
    if isinstance(value, float):
        return b"f" + struct.pack("<d", value)
    if isinstance(value, str):
        data = value.encode("utf-8")
        return b"s" + struct.pack("<I", len(data)) + data
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return b"y" + struct.pack("<I", len(data)) + data
    if isinstance(value, tuple):
        return b"t" + struct.pack("<I", len(value)) + b"".join(_encode_key(v) for v in value)
    raise TypeError(f"unsupported extra key type {type(value).__name__}: {value!r}")
