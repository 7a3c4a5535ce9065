"""Encoder outputs of each request's media, computed once, and their place in a step's input.

A request's items are registered when it is added; the next step encodes every request still
pending in one batch per encoder and setting (all images and video frames through the vision
tower together, all clips through the audio encoder), before any of its tokens run. Items found
in the EmbeddingCache run no encoder; items of equal content in one batch are encoded once. The
embeddings stay with the request until it finishes or is aborted, so preemption by recompute
never runs an encoder again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cache.embedding_cache import EmbeddingCache
from llm_core.multimodal.inputs import MultiModalInput
from llm_core.request import Request
from llm_core.scheduler_output import SchedulerOutput

# Images or video frames per vision-tower forward, bounding its activation memory.
MAX_IMAGES_PER_FORWARD = 64


@dataclass
class _Held:
    request: Request
    inputs: tuple[MultiModalInput, ...]
    embeddings: list[torch.Tensor] | None = None  # one [length, C_text] per input; None: pending
    end: int = field(init=False)  # the end of the last placeholder run

    def __post_init__(self) -> None:
        self.end = max(item.end for item in self.inputs)


class MultiModalEmbedder:
    """Holds each request's media embeddings and fills them into a step's input embeddings.

    num_encoder_forwards counts encoder forwards (vision and audio), num_encoded_items the items
    they encoded; embedding-cache hits and misses are counted by `cache`.
    """

    def __init__(self, image_encoder, audio_encoder, cache: EmbeddingCache, *, video_pool_stride: int = 1) -> None:
        self.image_encoder = image_encoder
        self.audio_encoder = audio_encoder
        self.cache = cache
        self.video_pool_stride = video_pool_stride
        self._held: dict[str, _Held] = {}
        self.num_encoder_forwards = 0
        self.num_encoded_items = 0

    def add(self, request: Request, inputs: tuple[MultiModalInput, ...]) -> None:
        """Registers a request's media; it is encoded by the next prepare_inputs_embeds. Replaces
        what an earlier request of the same id left (the engine admits no two live ones)."""
        self._held.pop(request.request_id, None)
        if inputs:
            self._held[request.request_id] = _Held(request, tuple(inputs))

    def free(self, request_ids) -> None:
        """Drops the embeddings of these requests (unknown ids are ignored)."""
        for request_id in request_ids:
            self._held.pop(request_id, None)

    def release_finished(self) -> None:
        """Drops the embeddings of every request that has finished."""
        for request_id in [rid for rid, held in self._held.items() if held.request.is_finished]:
            del self._held[request_id]

    def has_media(self, request_id: str) -> bool:
        return request_id in self._held

    def prepare_inputs_embeds(self, plan: SchedulerOutput, input_ids: torch.Tensor,
                              embed_tokens: torch.nn.Module) -> torch.Tensor | None:
        """The step's input embeddings [T, C] with every row at a media position taken from its
        item's embeddings (sliced by position, so a chunk may cut a run anywhere), or None when
        no scheduled token is a media placeholder (the model then embeds input_ids itself)."""
        if plan.finished_request_ids:
            self.release_finished()
        if any(held.embeddings is None for held in self._held.values()):
            self.encode_pending()
        rows = []  # (first row in the step, item embeddings, first row in the item, num rows)
        row = 0
        for entry in plan.requests:
            held = self._held.get(entry.request_id)
            start, end = entry.start_position, entry.start_position + entry.num_tokens
            if held is not None and held.end > start:
                for item, embeddings in zip(held.inputs, held.embeddings):
                    lo, hi = max(start, item.offset), min(end, item.end)
                    if lo < hi:
                        rows.append((row + lo - start, embeddings, lo - item.offset, hi - lo))
            row += entry.num_tokens
        if not rows:
            return None
        embeds = embed_tokens(input_ids)  # [T, C]
        for first, embeddings, offset, count in rows:
            embeds[first:first + count] = embeddings[offset:offset + count]
        return embeds

    def encode_pending(self) -> None:
        """Encodes the media of every registered request that has no embeddings yet."""
        pending = [held for held in self._held.values() if held.embeddings is None]
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, MultiModalInput] = {}
        for held in pending:
            for item in held.inputs:
                if item.content_hash in found or item.content_hash in missing:
                    continue
                cached = self.cache.get(item.content_hash)
                if cached is None:
                    missing[item.content_hash] = item
                else:
                    found[item.content_hash] = cached
        encoded = self._encode(list(missing.values()))
        for item in missing.values():
            self.cache.put(item.content_hash, encoded[item.content_hash])
        found.update(encoded)
        for held in pending:
            held.embeddings = [found[item.content_hash] for item in held.inputs]

    def _encode(self, items: list[MultiModalInput]) -> dict[str, torch.Tensor]:
        """content_hash -> embeddings [length, C_text] for items of distinct content. Each item's
        tensor owns its storage (no view of the batch), so the cache's byte count is true."""
        out: dict[str, torch.Tensor] = {}
        visual = [item for item in items if item.modality != "audio"]
        for stride in sorted({self._pool_stride(item) for item in visual}):
            group = [item for item in visual if self._pool_stride(item) == stride]
            frames = [frame for item in group for frame in _frames(item)]
            rows = torch.cat([self._run_vision(frames[i:i + MAX_IMAGES_PER_FORWARD], stride)
                              for i in range(0, len(frames), MAX_IMAGES_PER_FORWARD)])  # [N, tokens, C]
            first = 0
            for item in group:
                count = len(_frames(item))
                out[item.content_hash] = rows[first:first + count].flatten(0, 1).clone()
                first += count
        clips = [item for item in items if item.modality == "audio"]
        if clips:
            self.num_encoder_forwards += 1
            for item, embeddings in zip(clips, self.audio_encoder.encode([item.data for item in clips]), strict=True):
                out[item.content_hash] = embeddings.clone()
        self.num_encoded_items += len(items)
        for item in items:
            if out[item.content_hash].shape[0] != item.length:  # a bug: the processor counted wrong
                raise RuntimeError(f"{item.modality} encoded to {out[item.content_hash].shape[0]} rows for a run of "
                                   f"{item.length} placeholder tokens")
        return out

    def encode_frames(self, frames: list, stride: int) -> torch.Tensor:
        """Video frames through the vision tower now (streamed uploads): [N, tokens, C_text]."""
        return torch.cat([self._run_vision(frames[i:i + MAX_IMAGES_PER_FORWARD], stride)
                          for i in range(0, len(frames), MAX_IMAGES_PER_FORWARD)])

    def _pool_stride(self, item: MultiModalInput) -> int:
        return 1 if item.modality == "image" else self.video_pool_stride

    def _run_vision(self, frames: list, stride: int) -> torch.Tensor:
        self.num_encoder_forwards += 1
        return self.image_encoder.encode(frames, stride)


def _frames(item: MultiModalInput) -> tuple:
    return (item.data,) if item.modality == "image" else item.data
