"""`--profile-steps N`: a torch.profiler timeline of N engine steps, as a Chrome trace file.

    engine.step = StepProfiler(config.profiler, device).wrap(engine.step)

The profile starts at the first step and stops after the Nth; the file
`<profile_dir>/engine-steps-<pid>-<time>.json` opens in Perfetto (ui.perfetto.dev) or
chrome://tracing. Each step is a `engine.step #i` range holding the scheduler, the input
preparation, the forward (CPU ops, and CUDA kernels on a GPU) and the sampler. After the Nth step
the wrapper only counts, so profiling costs nothing once the file is written.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from llm_core.config import ProfilerConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StepProfiler:
    """Profiles the first `config.profile_steps` calls of the step function it wraps."""

    def __init__(self, config: ProfilerConfig, device: torch.device) -> None:
        self.num_steps = config.profile_steps
        self.directory = Path(config.profile_dir)
        self.activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.num_profiled = 0
        self.path: Path | None = None  # the trace file, once written
        self._profile: profile | None = None

    @property
    def is_done(self) -> bool:
        return self.num_profiled >= self.num_steps

    def wrap(self, step: Callable[[], T]) -> Callable[[], T]:
        def profiled_step() -> T:
            if self.is_done:
                return step()
            if self._profile is None:
                self._profile = profile(activities=self.activities, record_shapes=True)
                self._profile.start()
            with record_function(f"engine.step #{self.num_profiled}"):
                result = step()
            self.num_profiled += 1
            if self.is_done:
                self._write()
            return result

        return profiled_step

    def _write(self) -> None:
        assert self._profile is not None
        self._profile.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"engine-steps-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        self._profile.export_chrome_trace(str(path))
        self._profile = None
        self.path = path
        logger.info("wrote a profile of %d engine steps to %s", self.num_steps, path)
