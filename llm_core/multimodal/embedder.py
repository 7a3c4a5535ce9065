"""Encoder outputs of each request's media, computed once, and their place in a step's input.

A request's items are registered when it is added; items found in the EmbeddingCache then are
held at once (and leave Request.unencoded_media). The scheduler plans the others within the
step's encoder budget (SchedulerOutput.encoder_inputs); each step encodes its plan's items, of
every request together, in one batch per encoder and setting (all images and video frames
through the vision tower together, all clips through the audio encoder), before the forward.
Items of equal content in one batch are encoded once. The embeddings stay with the request
until it finishes or is aborted, so preemption by recompute never runs an encoder again.
"""

from __future__ import annotations

import time
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
    embeddings: list[torch.Tensor | None] = field(init=False)  # one [length, C_text] per input; None: pending
    end: int = field(init=False)  # the end of the last placeholder run
    # For traces: wall-clock ns of the first and last encoder batch that covered it; items found cached.
    encode_start_ns: int | None = None
    encode_end_ns: int | None = None
    num_cache_hits: int = 0

    def __post_init__(self) -> None:
        self.embeddings = [None] * len(self.inputs)
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
        """Registers a request's media (inputs[i] is request.media_spans[i]). Items in the cache are
        held now and dropped from request.unencoded_media; the others are encoded in the step whose
        plan lists them. Replaces what an earlier request of the same id left (the engine admits no
        two live ones)."""
        self._held.pop(request.request_id, None)
        if not inputs:
            return
        held = self._held[request.request_id] = _Held(request, tuple(inputs))
        for index, item in enumerate(held.inputs):
            cached = self.cache.get(item.content_hash)
            if cached is not None:
                held.embeddings[index] = cached
                held.num_cache_hits += 1
                request.unencoded_media.discard(index)
        if held.num_cache_hits == len(held.inputs):  # nothing to encode: the span is the lookup
            held.encode_start_ns = held.encode_end_ns = time.time_ns()

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

    def has_media_rows(self, plan: SchedulerOutput) -> bool:
        """Whether a scheduled token of the plan is a media placeholder, i.e. whether
        prepare_inputs_embeds will return embeddings for it (known before any of its work)."""
        return next(self._media_runs(plan), None) is not None

    def _media_runs(self, plan: SchedulerOutput):
        """The plan's runs of media rows: (request id, its held media, item index, first row in
        the step, first row in the item, number of rows); a chunk may cut a run anywhere."""
        row = 0
        for entry in plan.requests:
            held = self._held.get(entry.request_id)
            start, end = entry.start_position, entry.start_position + entry.num_tokens
            if held is not None and held.end > start:
                for index, item in enumerate(held.inputs):
                    lo, hi = max(start, item.offset), min(end, item.end)
                    if lo < hi:
                        yield entry.request_id, held, index, row + lo - start, lo - item.offset, hi - lo
            row += entry.num_tokens

    def prepare_inputs_embeds(self, plan: SchedulerOutput, input_ids: torch.Tensor,
                              embed_tokens: torch.nn.Module) -> torch.Tensor | None:
        """The step's input embeddings [T, C] with every row at a media position taken from its
        item's embeddings (sliced by position, so a chunk may cut a run anywhere), or None when
        no scheduled token is a media placeholder (the model then embeds input_ids itself)."""
        if plan.finished_request_ids:
            self.release_finished()
        if plan.encoder_inputs:
            self.encode(plan.encoder_inputs)
        rows = []  # (first row in the step, item embeddings, first row in the item, num rows)
        for request_id, held, index, first, offset, count in self._media_runs(plan):
            embeddings = held.embeddings[index]
            if embeddings is None:  # a bug: the scheduler did not plan its encoding
                item = held.inputs[index]
                raise RuntimeError(f"request {request_id!r}: {item.modality} at {item.offset} "
                                   "is scheduled but not encoded")
            rows.append((first, embeddings, offset, count))
        if not rows:
            return None
        embeds = embed_tokens(input_ids)  # [T, C]
        for first, embeddings, offset, count in rows:
            embeds[first:first + count] = embeddings[offset:offset + count]
        return embeds

    def encode_span(self, request_id: str) -> tuple[int, int, int, int] | None:
        """(start_ns, end_ns, num_items, num_cache_hits) of the encoder batches that covered the
        request's media (start = end when every item was cached); None without media."""
        held = self._held.get(request_id)
        if held is None or held.encode_start_ns is None or held.encode_end_ns is None:
            return None
        return held.encode_start_ns, held.encode_end_ns, len(held.inputs), held.num_cache_hits

    def encode(self, encoder_inputs) -> None:
        """Encodes the planned items, (request_id, index) pairs of several requests, in one batch
        per encoder; an item that another request put in the cache meanwhile runs no encoder."""
        start_ns = time.time_ns()
        targets: list[tuple[_Held, int]] = []
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, MultiModalInput] = {}
        for request_id, index in encoder_inputs:
            held = self._held.get(request_id)
            if held is None or held.embeddings[index] is not None:
                continue
            targets.append((held, index))
            item = held.inputs[index]
            if item.content_hash in found or item.content_hash in missing:
                continue
            if self.cache.contains(item.content_hash):
                found[item.content_hash] = self.cache.get(item.content_hash)
            else:
                missing[item.content_hash] = item
        encoded = self._encode(list(missing.values()))
        for item in missing.values():
            self.cache.put(item.content_hash, encoded[item.content_hash])
        found.update(encoded)
        end_ns = time.time_ns()
        for held, index in targets:
            content_hash = held.inputs[index].content_hash
            held.embeddings[index] = found[content_hash]
            held.num_cache_hits += content_hash not in missing
            held.encode_start_ns = held.encode_start_ns or start_ns
            held.encode_end_ns = end_ns

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
