"""Embeddings of media already encoded, keyed by content, within a byte budget (LRU).

A key is a sha256 over the decoded input (its bytes, shape and dtype), the settings that shape
the output (preprocessing, pooling) and the encoder's identity, so equal keys mean the same
embeddings however the media arrived (another container, another upload). Keys are hex strings,
fit for `MediaSpan.content_hash`. Values are whatever the encoder returns; the cache reads only
their `nbytes` (torch tensors and numpy arrays have it), so this module imports no torch.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

_DOMAIN = b"tributary.embedding.v1"  # bump when the key encoding changes


def content_key(data: Any, *, shape: tuple[int, ...], dtype: str, encoder_id: str, settings: str = "") -> str:
    """The cache key of decoded media; `data` exposes its bytes by the buffer protocol (bytes, a
    C-contiguous numpy array)."""
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError("content_key needs C-contiguous data")
    hasher = hashlib.sha256(_DOMAIN)
    for field in (encoder_id, settings, dtype, ",".join(map(str, shape))):
        encoded = field.encode()
        hasher.update(len(encoded).to_bytes(8, "little") + encoded)  # length-prefixed: no ambiguity
    hasher.update(view.nbytes.to_bytes(8, "little"))
    hasher.update(view.cast("B"))
    return hasher.hexdigest()


def _nbytes(value: Any) -> int:
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(item) for item in value)
    raise TypeError(f"cannot size a {type(value).__name__} (it needs an nbytes attribute)")


class EmbeddingCache:
    """Content key -> embeddings, holding at most capacity_bytes; the least recently used entry
    is evicted first. `get` counts hits and misses; `contains` counts nothing and keeps the
    order. Values are stored as given (not copied): callers must not modify them. Thread-safe.
    """

    def __init__(self, capacity_bytes: int) -> None:
        if type(capacity_bytes) is not int or capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be a non-negative integer, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # oldest use first
        self._num_bytes = 0
        self._lock = threading.Lock()
        # Counters
        self.num_hits = 0
        self.num_misses = 0
        self.num_evictions = 0

    def get(self, key: str) -> Any | None:
        """The embeddings stored under key (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.num_misses += 1
                return None
            self._entries.move_to_end(key)
            self.num_hits += 1
            return entry[0]

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def put(self, key: str, value: Any) -> bool:
        """Stores value under key, evicting least recently used entries until it fits. Returns
        False (and stores nothing) when the value alone is larger than the whole budget."""
        size = _nbytes(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._num_bytes -= old[1]
            if size > self.capacity_bytes:
                return False
            while self._num_bytes + size > self.capacity_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._num_bytes -= evicted
                self.num_evictions += 1
            self._entries[key] = (value, size)
            self._num_bytes += size
            return True

    def clear(self) -> None:
        """Drops every entry; the counters stay."""
        with self._lock:
            self._entries.clear()
            self._num_bytes = 0

    @property
    def num_bytes(self) -> int:
        return self._num_bytes

    def __len__(self) -> int:
        return len(self._entries)
