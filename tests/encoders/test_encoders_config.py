"""MediaLimits (encoders/config.py): defaults build, bad values are refused with their name."""

from __future__ import annotations

import math

import pytest

from encoders.config import DEFAULT_MEDIA_LIMITS, MediaLimits


def test_defaults_are_valid_and_sized_per_modality():
    limits = MediaLimits()
    assert limits == DEFAULT_MEDIA_LIMITS
    assert limits.max_bytes("image") == limits.max_image_bytes
    assert limits.max_bytes("video") == limits.max_video_bytes
    assert limits.max_bytes("audio") == limits.max_audio_bytes
    with pytest.raises(ValueError, match="modality"):
        limits.max_bytes("text")


@pytest.mark.parametrize("field, value", [
    ("max_image_bytes", 0), ("max_video_bytes", -1), ("max_audio_bytes", 1.5),
    ("max_image_pixels", True), ("max_video_frames", "8"),
    ("video_sample_fps", 0), ("video_sample_fps", math.nan), ("video_sample_fps", 1000),
    ("max_video_duration_s", math.inf), ("max_audio_duration_s", -3.0),
])
def test_bad_values_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        MediaLimits(**{field: value})


def test_is_frozen_and_takes_integral_seconds():
    limits = MediaLimits(max_video_duration_s=30, video_sample_fps=1)
    assert limits.max_video_duration_s == 30
    with pytest.raises(AttributeError):
        limits.max_video_frames = 3  # type: ignore[misc]
