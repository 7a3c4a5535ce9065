"""The media of a chat part, as the offline API takes it, decoded for the encoders.

An image is a PIL image, encoded bytes or a file path (a uint8 [H, W, 3] RGB array is taken as
is); a video is encoded bytes or a path; audio is (samples, sample_rate), encoded bytes or a
path. Bytes and files decode with encoders.media under `limits`, so a bad file raises that
package's MediaError naming the part; a value of the wrong kind raises ValueError.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from encoders.config import MediaLimits
from encoders.media.errors import too_large
from encoders.media.image import decode_image


def load_image(value: Any, limits: MediaLimits, where: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB, upright and opaque."""
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
            raise ValueError(f"{where}: an image array must be uint8 [H, W, 3], got {value.dtype} {value.shape}")
        _check_pixels(value.shape[0] * value.shape[1], limits, where)
        return value
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image
        _check_pixels(value.width * value.height, limits, where)
        if value.mode == "RGB":
            return np.asarray(value)
        buffer = io.BytesIO()  # other modes (alpha, palette, 16-bit) flatten as decoded files do
        value.save(buffer, format="PNG")
        value = buffer.getvalue()
    return decode_image(_read(value, "image", limits, where), limits, item_id=where)


def load_video(value: Any, limits: MediaLimits, where: str) -> tuple[np.ndarray, ...]:
    """The sampled frames, uint8 [H, W, 3] each, at limits.video_sample_fps (at most max_video_frames).

    A list or tuple of frames is taken as already decoded and sampled (what the gateway sends)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{where}: the video has no frames")
        if len(value) > limits.max_video_frames:
            raise too_large(f"the video has {len(value)} frames, over the limit of {limits.max_video_frames}", where)
        return tuple(load_image(frame, limits, f"{where} frame {i}") for i, frame in enumerate(value))
    from encoders.media.video import decode_video  # PyAV, imported only when a video comes

    frames = decode_video(_read(value, "video", limits, where), None, limits, item_id=where)
    if not frames:
        raise ValueError(f"{where}: the video has no frames")
    return tuple(frame.image for frame in frames)


def load_audio(value: Any, limits: MediaLimits, where: str) -> tuple[np.ndarray, int]:
    """(float32 mono samples [S], sample rate in Hz)."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{where}: audio as a tuple is (samples, sample_rate)")
        samples, rate = np.asarray(value[0], dtype=np.float32), value[1]
        if samples.ndim != 1 or not len(samples):
            raise ValueError(f"{where}: audio samples must be a non-empty mono array [S], got shape {samples.shape}")
        if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate < 1:
            raise ValueError(f"{where}: the sample rate must be a positive integer, got {rate!r}")
        if len(samples) / rate > limits.max_audio_duration_s:
            raise too_large(f"the audio lasts {len(samples) / rate:.1f} s, over the limit of "
                            f"{limits.max_audio_duration_s} s", where)
        return samples, int(rate)
    from encoders.media.audio import decode_audio  # PyAV, imported only when encoded audio comes

    return decode_audio(_read(value, "audio", limits, where), None, limits, item_id=where)


def _read(value: Any, modality: str, limits: MediaLimits, where: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"{where}: no {modality} file at {str(value)!r}")
        size, limit = path.stat().st_size, limits.max_bytes(modality)
        if size > limit:
            raise too_large(f"the {modality} is {size} bytes, over the limit of {limit}", where)
        return path.read_bytes()
    raise ValueError(f"{where}: cannot read {modality} from a {type(value).__name__} "
                     f"(expected bytes or a file path{_OTHER_FORMS[modality]})")


_OTHER_FORMS = {"image": ", a PIL image or a uint8 [H, W, 3] array", "video": "",
                "audio": " or (samples, sample_rate)"}


def _check_pixels(num_pixels: int, limits: MediaLimits, where: str) -> None:
    if num_pixels > limits.max_image_pixels:
        raise too_large(f"the image has {num_pixels} pixels, over the limit of {limits.max_image_pixels}", where)
