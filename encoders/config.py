"""Configuration of media decoding: what one image, video or audio item may cost to decode.

The rates that the encoders want (the vision tower's frame count, Whisper's 16 kHz) are settings of
the encoders, not limits: decoding reports each item's native sample rate and leaves resampling to
the engine process.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# Pillow's own decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS by default): above it
# Pillow warns on opening, above twice it refuses. The pixel limit stays at or under it, so that
# every image Pillow warns about is one that the limit refuses anyway.
PILLOW_MAX_IMAGE_PIXELS = 89_478_485


@dataclass(frozen=True)
class MediaLimits:
    """Per-item limits of media decoding; exceeding one gives a `media_too_large` MediaError.

    Video frames are sampled at `video_sample_fps` (uniformly by timestamp), at most
    `max_video_frames` of them; when a clip's duration is known up front and that would give more
    frames, the rate is lowered so that the frames still span the whole clip.
    """

    # Bytes of one item as uploaded
    max_image_bytes: int = 20 << 20
    max_video_bytes: int = 256 << 20
    max_audio_bytes: int = 64 << 20
    # Decoded size
    max_image_pixels: int = 50_000_000  # width * height of an image or of one video frame
    max_video_frames: int = 64  # sampled frames kept per video
    video_sample_fps: float = 2.0
    max_video_duration_s: float = 600.0
    max_audio_duration_s: float = 1800.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (type(value) is not int or value < 1):
                raise ValueError(f"MediaLimits.{f.name} must be a positive integer, got {value!r}")
            is_number = type(value) in (int, float)
            if f.type == "float" and (not is_number or not 0 < value < float("inf")):
                raise ValueError(f"MediaLimits.{f.name} must be a positive number, got {value!r}")
        if self.max_image_pixels > PILLOW_MAX_IMAGE_PIXELS:
            raise ValueError(f"MediaLimits.max_image_pixels must be at most "
                             f"{PILLOW_MAX_IMAGE_PIXELS} (Pillow's own limit), got "
                             f"{self.max_image_pixels}")
        if self.video_sample_fps > 240:
            raise ValueError(
                f"MediaLimits.video_sample_fps must be at most 240, got {self.video_sample_fps}"
            )

    def max_bytes(self, modality: str) -> int:
        """The byte limit of one item of `modality` ("image", "video" or "audio")."""
        if modality == "image":
            return self.max_image_bytes
        if modality == "video":
            return self.max_video_bytes
        if modality == "audio":
            return self.max_audio_bytes
        raise ValueError(f"unknown modality {modality!r}")


DEFAULT_MEDIA_LIMITS = MediaLimits()
