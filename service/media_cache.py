"""Decoded media kept by content, so that a client announcing a known `content_hash` skips its upload.

Keys are computed by the server from the bytes it received (modality, mime, sha256), never taken
from a client's claim, so one client cannot plant media under another's hash. Shared by all
sessions of a server; used only on the event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

CacheKey = tuple[str, str, str]  # (modality, mime, sha256 hex)


@dataclass(frozen=True)
class CachedMedia:
    data: Any
    num_tokens: int
    nbytes: int


def decoded_nbytes(data: Any) -> int:
    """Bytes held by decoded media: an array, a list of frames, or (samples, rate)."""
    if isinstance(data, np.ndarray):
        return data.nbytes
    if isinstance(data, (list, tuple)):
        return sum(decoded_nbytes(item) for item in data)
    return 0


class MediaCache:
    """An LRU of decoded items within `max_bytes` (0 keeps nothing)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self._entries: OrderedDict[CacheKey, CachedMedia] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> CachedMedia | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, data: Any, num_tokens: int) -> None:
        """Keep an item unless it alone is over the budget; evicts the least recently used."""
        nbytes = decoded_nbytes(data)
        if nbytes > self.max_bytes or key in self._entries:
            return
        self._entries[key] = CachedMedia(data, num_tokens, nbytes)
        self.num_bytes += nbytes
        while self.num_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.num_bytes -= evicted.nbytes
