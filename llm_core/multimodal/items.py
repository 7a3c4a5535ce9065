"""Media items uploaded ahead of the request that uses them, encoded while they stream in.

The gateway appends decoded media as it arrives (input.append): video frames as the streaming
decoder yields them, audio samples, an image. Video frames run through the vision tower at once,
batch by batch, so a long upload is mostly encoded by the time its last chunk lands. When an
item is committed (final), its whole embedding goes into the embedding cache under the key that
the processor computes for the same content, and a request that names the item
({"type": "item", "item_id": ...}) finds it there and runs no encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from llm_core.multimodal.media import load_audio, load_image, load_video

MODALITIES = ("image", "video", "audio")


@dataclass
class _Item:
    modality: str
    frames: list[np.ndarray] = field(default_factory=list)  # video; an image is one frame
    frame_embeddings: list[torch.Tensor] = field(default_factory=list)  # video: [tokens, C] per frame
    samples: list[np.ndarray] = field(default_factory=list)  # audio chunks
    rate: int | None = None
    final: bool = False

    def value(self) -> Any:
        if self.modality == "image":
            return self.frames[0]
        if self.modality == "video":
            return tuple(self.frames)
        return np.concatenate(self.samples), self.rate


class MediaItemStore:
    """Uploaded items of one engine, by id. Limits: max_items live items (oldest committed first out)."""

    def __init__(self, processor, embedder, *, max_items: int = 1024) -> None:
        self.processor = processor
        self.embedder = embedder
        self.max_items = max_items
        self._items: dict[str, _Item] = {}
        self.num_frames_encoded = 0
        processor.item_resolver = self.resolve

    def append(self, item_id: str, modality: str, data: Any, *, final: bool) -> int:
        """Add decoded media to an item (creating it); returns its frames (video) or samples (audio) so far.

        video: a list of frames uint8 [H, W, 3]; image: one frame; audio: (float32 samples, rate).
        """
        if modality not in MODALITIES:
            raise ValueError(f"item {item_id!r}: modality must be one of {MODALITIES}, not {modality!r}")
        item = self._items.get(item_id) or _Item(modality)  # stored only once its first data is good
        if item.modality != modality:
            raise ValueError(f"item {item_id!r} is {item.modality}, not {modality}")
        if item.final:
            raise ValueError(f"item {item_id!r} is already committed")
        where = f"item {item_id!r}"
        limits = self.processor.limits
        if modality == "audio":
            samples, rate = load_audio(data, limits, where)
            if item.rate not in (None, rate):
                raise ValueError(f"{where}: audio chunks at {rate} Hz after {item.rate} Hz")
            item.samples.append(samples)
            item.rate = rate
        else:
            if modality == "image":
                frames = [load_image(data, limits, where)]
            else:  # an empty list only commits what came before
                frames = list(load_video(data, limits, where)) if len(data) else []
            if len(item.frames) + len(frames) > limits.max_video_frames:
                raise ValueError(f"{where}: more than {limits.max_video_frames} frames")
            item.frames.extend(frames)
            if modality == "video" and frames:
                self._encode_frames(item, frames)
        if final and not (item.frames or item.samples):
            raise ValueError(f"{where} has no media to commit")
        if item_id not in self._items:
            self._make_room()
            self._items[item_id] = item
        if final:
            self._commit(item_id, item)
        return len(item.frames) if modality != "audio" else sum(len(s) for s in item.samples)

    def resolve(self, item_id: Any, where: str) -> tuple[str, Any]:
        """(modality, decoded value) of a committed item, for the processor."""
        item = self._items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise ValueError(f"{where}: unknown item {item_id!r}")
        if not item.final:
            raise ValueError(f"{where}: item {item_id!r} is not committed yet (its last chunk has final=true)")
        return item.modality, item.value()

    def delete(self, item_id: str) -> bool:
        return self._items.pop(item_id, None) is not None

    def _encode_frames(self, item: _Item, frames: list[np.ndarray]) -> None:
        stride = self.processor.video_pool_stride
        rows = self.embedder.encode_frames(frames, stride)  # [N, tokens, C]
        item.frame_embeddings.extend(rows[i].clone() for i in range(len(frames)))
        self.num_frames_encoded += len(frames)

    def _commit(self, item_id: str, item: _Item) -> None:
        item.final = True
        if item.modality == "video" and item.frame_embeddings:
            key = self.processor.video_key(item.frames)
            self.embedder.cache.put(key, torch.cat(item.frame_embeddings))
            item.frame_embeddings = []  # the cache holds them now

    def _make_room(self) -> None:
        if len(self._items) < self.max_items:
            return
        oldest = next((i for i, it in self._items.items() if it.final), None)
        if oldest is None:
            raise ValueError(f"too many media items in flight (limit {self.max_items})")
        del self._items[oldest]
