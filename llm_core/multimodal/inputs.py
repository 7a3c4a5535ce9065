"""The media items of a prompt: where their placeholder runs sit and what the encoders take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cache.block_hash import MediaSpan

MODALITIES = ("image", "video", "audio")


@dataclass(frozen=True, eq=False)
class MultiModalInput:
    """One image, video or audio item of a prompt.

    content_hash: the item's embedding-cache key (its decoded content, the encoder and the
        settings), also the hash that enters the prefix cache's block hashes.
    offset, length: the run of placeholder tokens [offset, offset + length) of the prompt that
        the item's embeddings replace, one row per token.
    data: the decoded media: image uint8 [H, W, 3]; video a tuple of frames uint8 [H, W, 3];
        audio (float32 mono samples [S], sample rate).
    """

    modality: str
    content_hash: str
    offset: int
    length: int
    data: Any

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.offset < 0 or self.length < 1:
            raise ValueError(f"bad placeholder run: offset {self.offset}, length {self.length}")

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def span(self) -> MediaSpan:
        return MediaSpan(self.offset, self.length, self.content_hash)


@dataclass(frozen=True)
class MultiModalPrompt:
    """A chat prompt with media: token ids with every placeholder run expanded, and the items
    in order of offset (their runs never overlap)."""

    token_ids: list[int]
    inputs: tuple[MultiModalInput, ...]

    def __post_init__(self) -> None:
        for previous, item in zip(self.inputs, self.inputs[1:]):
            if item.offset < previous.end:
                raise ValueError(f"media items overlap or are out of order: {previous.span} and {item.span}")
        if self.inputs and self.inputs[-1].end > len(self.token_ids):
            raise ValueError("a media item's placeholder run reaches past the prompt")

    @property
    def media_spans(self) -> tuple[MediaSpan, ...]:
        return tuple(item.span for item in self.inputs)
