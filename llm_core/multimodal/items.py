"""Media items uploaded ahead of the request that uses them, encoded while they stream in.

The gateway appends decoded media as it arrives (input.append): video frames as the streaming
decoder yields them, audio samples, an image. Video frames wait for the vision tower until a step
has room: each engine step gives them the encoder budget that its requests' media left
(`encode_pending`), so a long upload is mostly encoded by the time its last chunk lands and
decoding never stalls behind it. When an item is committed (final) and all its frames are
encoded, its whole embedding goes into the embedding cache under the key that the processor
computes for the same content, and a request that names the item ({"type": "item", "item_id":
...}) finds it there and runs no encoder. A request naming a committed item whose last frames
still wait encodes them when it is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from encoders.media.errors import too_large
from llm_core.multimodal.media import load_audio, load_image, load_video

MODALITIES = ("image", "video", "audio")


@dataclass
class _Item:
    modality: str
    frames: list[np.ndarray] = field(default_factory=list)  # video; an image is one frame
    frame_embeddings: list[torch.Tensor] = field(default_factory=list)  # video: [tokens, C] per frame
    num_encoded_frames: int = 0  # video: frames through the tower (their rows may be in the cache by now)
    samples: list[np.ndarray] = field(default_factory=list)  # audio chunks
    rate: int | None = None
    final: bool = False

    @property
    def num_pending_frames(self) -> int:
        """Video frames that wait for the vision tower."""
        return len(self.frames) - self.num_encoded_frames if self.modality == "video" else 0

    def value(self) -> Any:
        if self.modality == "image":
            return self.frames[0]
        if self.modality == "video":
            return tuple(self.frames)
        return np.concatenate(self.samples), self.rate


class MediaItemStore:
    """Uploaded items of one engine, by id. Limits: max_items live items (oldest committed first out).

    num_frames_encoded counts video frames through the tower, num_pending_frames those waiting.
    """

    def __init__(self, processor, embedder, *, max_items: int = 1024) -> None:
        self.processor = processor
        self.embedder = embedder
        self.max_items = max_items
        self._items: dict[str, _Item] = {}
        self.num_frames_encoded = 0
        self.num_pending_frames = 0
        processor.item_resolver = self.resolve

    @property
    def num_items(self) -> int:
        return len(self._items)

    def append(self, item_id: str, modality: str, data: Any, *, final: bool) -> int:
        """Add decoded media to an item (creating it); returns its frames (video) or samples (audio) so far.

        video: a list of frames uint8 [H, W, 3]; image: one frame; audio: (float32 samples, rate).
        Video frames are encoded later, by encode_pending (or when a request names the item).
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
                raise too_large(f"more than {limits.max_video_frames} frames", where)
            item.frames.extend(frames)
        if final and not (item.frames or item.samples):
            raise ValueError(f"{where} has no media to commit")
        if item_id not in self._items:
            self._make_room()
            self._items[item_id] = item
        if modality == "video":
            self.num_pending_frames += len(frames)
        if final:
            item.final = True
            self._commit_if_encoded(item)
        return len(item.frames) if modality != "audio" else sum(len(s) for s in item.samples)

    def resolve(self, item_id: Any, where: str) -> tuple[str, Any]:
        """(modality, decoded value) of a committed item, for the processor. A video's waiting
        frames are encoded now, so that its embeddings are in the cache."""
        item = self._items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise ValueError(f"{where}: unknown item {item_id!r}")
        if not item.final:
            raise ValueError(f"{where}: item {item_id!r} is not committed yet (its last chunk has final=true)")
        if item.num_pending_frames:
            self._encode([(item, item.num_pending_frames)])
        return item.modality, item.value()

    def delete(self, item_id: str) -> bool:
        item = self._items.pop(item_id, None)
        if item is None:
            return False
        self.num_pending_frames -= item.num_pending_frames
        return True

    def encode_pending(self, max_num_tokens: int, *, at_least_one: bool) -> int:
        """Encodes waiting video frames, oldest item first, in one vision batch of at most
        `max_num_tokens` embedding rows (or one frame when `at_least_one` and a frame has more);
        returns the rows encoded."""
        if not self.num_pending_frames:
            return 0
        frame_tokens = self.processor.image_encoder.config.num_frame_tokens(self.processor.video_pool_stride)
        num_frames = max(max_num_tokens // frame_tokens, 1 if at_least_one else 0)
        work = []
        for item in self._items.values():
            if num_frames <= 0:
                break
            if item.num_pending_frames:
                work.append((item, min(item.num_pending_frames, num_frames)))
                num_frames -= work[-1][1]
        self._encode(work)
        return sum(count for _, count in work) * frame_tokens

    def _encode(self, work: list[tuple[_Item, int]]) -> None:
        """The next `count` waiting frames of each (item, count) through the vision tower in one
        batch; an item committed and now wholly encoded goes into the cache."""
        frames = [frame for item, count in work
                  for frame in item.frames[item.num_encoded_frames:item.num_encoded_frames + count]]
        if not frames:
            return
        rows = self.embedder.encode_frames(frames, self.processor.video_pool_stride)  # [N, tokens, C]
        first = 0
        for item, count in work:
            item.frame_embeddings.extend(rows[first + i].clone() for i in range(count))
            item.num_encoded_frames += count
            first += count
            self._commit_if_encoded(item)
        self.num_frames_encoded += len(frames)
        self.num_pending_frames -= len(frames)

    def _commit_if_encoded(self, item: _Item) -> None:
        """A committed video whose frames are all encoded: its embeddings go into the cache."""
        if item.final and item.modality == "video" and item.frame_embeddings and not item.num_pending_frames:
            key = self.processor.video_key(item.frames)
            self.embedder.cache.put(key, torch.cat(item.frame_embeddings))
            item.frame_embeddings = []  # the cache holds them now

    def _make_room(self) -> None:
        if len(self._items) < self.max_items:
            return
        oldest = next((i for i, it in self._items.items() if it.final), None)
        if oldest is None:
            raise ValueError(f"too many media items in flight (limit {self.max_items})")
        self.delete(oldest)
