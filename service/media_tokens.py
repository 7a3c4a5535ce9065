"""Which media a checkpoint takes and how many prompt tokens an item becomes, without torch.

The gateway answers `input.committed.num_tokens` and refuses media the model cannot take
(`unsupported_media`) before any byte is decoded. The counts are the arithmetic of
encoders.encoder_config, the same the engine's processor uses to expand placeholders.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from encoders.encoder_config import (audio_encoder_config, audio_preprocess_config, image_encoder_config,
                                     num_audio_tokens, read_config_json, read_preprocessor_json)

logger = logging.getLogger(__name__)


class ModelMedia:
    """The media side of one checkpoint: its modalities and token counts per decoded item.

    A checkpoint without a vision or audio encoder takes no media; one whose config cannot be read
    is treated the same way, with a warning.
    """

    def __init__(self, image=None, audio=None, audio_preprocess=None, video_pool_stride: int = 1) -> None:
        self._image = image
        self._audio = audio
        self._audio_preprocess = audio_preprocess
        self.video_pool_stride = video_pool_stride

    @classmethod
    def from_model_dir(cls, model_dir: str | Path | None, video_pool_stride: int = 1) -> "ModelMedia":
        if model_dir is None:
            return cls()
        try:
            config = read_config_json(model_dir)
            model_type = config.get("model_type")
            if model_type == "llava":
                return cls(image=image_encoder_config(config), video_pool_stride=video_pool_stride)
            if model_type == "qwen2_audio":
                settings = read_preprocessor_json(model_dir, "feature_extractor")
                return cls(audio=audio_encoder_config(config), audio_preprocess=audio_preprocess_config(settings))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("media inputs are off: cannot read the encoder config of %s: %s", model_dir, exc)
        return cls()

    @classmethod
    def combined(cls, medias: list["ModelMedia"]) -> "ModelMedia":
        """The media of models served side by side: each modality as the first model taking it counts it."""
        if len(medias) == 1:
            return medias[0]
        image = next((m for m in medias if m._image is not None), cls())
        audio = next((m for m in medias if m._audio is not None), cls())
        return cls(image=image._image, audio=audio._audio, audio_preprocess=audio._audio_preprocess,
                   video_pool_stride=image.video_pool_stride)

    @property
    def modalities(self) -> tuple[str, ...]:
        found = ()
        if self._image is not None:
            found += ("image", "video")
        if self._audio is not None:
            found += ("audio",)
        return found

    def num_tokens(self, modality: str, data: Any) -> int:
        """Prompt tokens that a decoded item takes: an image uint8 [H, W, 3], a video's list of
        frames, audio (samples [S], sample_rate)."""
        if modality == "image" and self._image is not None:
            return self._image.num_image_tokens
        if modality == "video" and self._image is not None:
            return len(data) * self._image.num_frame_tokens(self.video_pool_stride)
        if modality == "audio" and self._audio is not None:
            samples, rate = data
            target = self._audio_preprocess.sampling_rate
            resampled = len(samples) if rate == target else -(-len(samples) * target // rate)
            return num_audio_tokens(self._audio_preprocess.num_valid_frames(resampled))
        return 0
