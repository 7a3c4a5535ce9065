"""A checkpoint's media path in the engine: its encoders, the prompt processor and the embedder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from cache.embedding_cache import EmbeddingCache
from encoders.loader import load_encoders
from llm_core.config import MultiModalConfig
from llm_core.multimodal.embedder import MultiModalEmbedder
from llm_core.multimodal.inputs import MultiModalPrompt
from llm_core.multimodal.items import MediaItemStore
from llm_core.multimodal.processor import MultiModalProcessor
from llm_core.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class MultiModal:
    """The processor that makes media prompts and the embedder that encodes them, for one model."""

    def __init__(self, processor: MultiModalProcessor, embedder: MultiModalEmbedder) -> None:
        self.processor = processor
        self.embedder = embedder
        self.items = MediaItemStore(processor, embedder)

    def process(self, prompt: Any) -> MultiModalPrompt | None:
        """The prompt's token ids and media items, or None for a prompt without media (the text
        path renders it). Bad media or parts raise ValueError or MediaError."""
        if not self.processor.has_media(prompt):
            return None
        return self.processor.process(prompt["messages"])


def load_multimodal(model_dir: str | Path, tokenizer: Tokenizer, config: MultiModalConfig, *,
                    device: torch.device, dtype: torch.dtype) -> MultiModal | None:
    """The model's media path, or None for a checkpoint without a vision or audio encoder."""
    image_encoder, audio_encoder = load_encoders(model_dir, device, dtype)
    if image_encoder is None and audio_encoder is None:
        return None
    logger.info("loaded the %s encoder", "image" if image_encoder is not None else "audio")
    processor = MultiModalProcessor(tokenizer, image_encoder, audio_encoder,
                                    video_pool_stride=config.video_pool_stride)
    embedder = MultiModalEmbedder(image_encoder, audio_encoder, EmbeddingCache(config.embedding_cache_bytes),
                                  video_pool_stride=config.video_pool_stride)
    return MultiModal(processor, embedder)
