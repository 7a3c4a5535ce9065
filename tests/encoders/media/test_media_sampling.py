"""FrameSampler (encoders/media/sampling.py): uniform by timestamp, up to a count."""

from __future__ import annotations

import pytest

from encoders.media import FrameSampler


def _kept(sampler: FrameSampler, times: list[float]) -> list[float]:
    return [t for t in times if sampler.keep(t)]


def test_keeps_the_first_frame_at_or_after_each_point():
    times = [i / 30 for i in range(90)]  # 3 s at 30 fps
    kept = _kept(FrameSampler(fps=2, max_frames=100), times)
    assert kept == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5], abs=1e-9)


def test_a_slower_clip_keeps_every_frame():
    times = [0.0, 1.0, 2.0, 3.0]
    assert _kept(FrameSampler(fps=4, max_frames=100), times) == times


def test_stops_at_max_frames_without_a_duration():
    sampler = FrameSampler(fps=10, max_frames=3)
    assert _kept(sampler, [i / 10 for i in range(20)]) == pytest.approx([0, 0.1, 0.2])
    assert sampler.is_full


def test_a_known_duration_spreads_max_frames_over_the_clip():
    sampler = FrameSampler(fps=10, max_frames=4)
    sampler.fit_duration(8.0)
    kept = _kept(sampler, [i / 25 for i in range(200)])
    assert kept == pytest.approx([0, 2, 4, 6])
    assert sampler.fps == 0.5


def test_bad_arguments():
    with pytest.raises(ValueError):
        FrameSampler(fps=0, max_frames=1)
    with pytest.raises(ValueError):
        FrameSampler(fps=1, max_frames=0)
