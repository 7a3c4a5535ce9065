"""Choosing which decoded video frames to keep: uniformly by timestamp, up to a count.

Times are relative to the first frame. Sample point k is at k / fps; the first frame at or after
each point is kept (once, however many points it covers), so a clip slower than `fps` keeps every
frame. When the duration is known before the first frame, the rate is lowered to
max_frames / duration where that is smaller, so the kept frames span the whole clip; when it is not
(a live stream), the first `max_frames` sample points are kept and later frames are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Timestamps are rationals turned into floats; a frame this close before a point counts as on it.
_TOLERANCE_S = 1e-3


@dataclass(frozen=True)
class SampledFrame:
    """One kept video frame.

    image: uint8 [H, W, 3] RGB, upright (the container's rotation applied).
    timestamp_s: seconds since the first frame of the video.
    """

    image: np.ndarray
    timestamp_s: float


class FrameSampler:
    """Decides frame by frame, in presentation order, whether to keep it."""

    def __init__(self, fps: float, max_frames: int) -> None:
        if not fps > 0 or max_frames < 1:
            raise ValueError(f"need fps > 0 and max_frames >= 1, got {fps} and {max_frames}")
        self.fps = fps
        self.max_frames = max_frames
        self.num_kept = 0
        self._next_s = 0.0

    def fit_duration(self, duration_s: float) -> None:
        """Lowers the rate so that at most max_frames points fall within `duration_s`."""
        if self.num_kept == 0 and duration_s > 0:
            self.fps = min(self.fps, self.max_frames / duration_s)

    @property
    def is_full(self) -> bool:
        return self.num_kept >= self.max_frames

    def keep(self, time_s: float) -> bool:
        """Whether the frame at `time_s` (relative to the first frame) is kept; counts it if so."""
        if self.is_full or time_s < self._next_s - _TOLERANCE_S:
            return False
        self.num_kept += 1
        self._next_s = (math.floor((time_s + _TOLERANCE_S) * self.fps) + 1) / self.fps
        return True
