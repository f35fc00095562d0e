"""`trainer.profile_steps` (`+debug=profile`): torch.profiler over the first train steps.

Two steps are left out first (the first step allocates, compiles and fills caches, which is not
what a run spends its time on); the next ``profile_steps`` are recorded. The run then writes the
trace (Chrome trace format: Perfetto and TensorBoard's profiler open it) and shows a table of
the costliest ops. Nothing of this runs unless asked for: the loop wraps its step only then.
"""

from __future__ import annotations

import os
from pathlib import Path

# the profiler's library prints its stages (and, on a machine without a GPU, a failed GPU count)
# on stderr; a run's console is dlrun's. KINETO_LOG_LEVEL set by the user wins.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, schedule  # noqa: E402

from dlrun.engine.steps import Batch, Step  # noqa: E402

WAIT, WARMUP = 1, 1  # steps before recording: one skipped, one to warm the profiler up
TOP_OPS = 15  # rows of the table shown


class Profiler:
    def __init__(self, steps: int, device: torch.device) -> None:
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.cuda = device.type == "cuda"
        self.steps = steps
        self.seen = 0
        self._done = False
        self._profile = profile(
            activities=activities,
            schedule=schedule(wait=WAIT, warmup=WARMUP, active=steps, repeat=1),
            on_trace_ready=self._ready,
            record_shapes=True,
        )
        self._profile.start()

    def _ready(self, prof: profile) -> None:
        self._done = True

    def wrap(self, step: Step) -> Step:
        """The step, advancing the profiler's schedule after each call until it is done."""

        def profiled(batch: Batch) -> torch.Tensor:
            loss = step(batch)
            if not self._done:
                self.seen += 1
                self._profile.step()
            return loss

        return profiled

    def recorded(self) -> int:
        """How many steps the trace holds."""
        return max(0, min(self.steps, self.seen - WAIT - WARMUP))

    def finish(self, trace: Path) -> str:
        """Stop recording, write the trace to ``trace``; returns the table of the costliest ops
        (empty when the run had too few steps to record any)."""
        if not self._done:
            self._profile.stop()  # a run shorter than the schedule: what was recorded
        if not self.recorded():
            return ""
        trace.parent.mkdir(parents=True, exist_ok=True)
        self._profile.export_chrome_trace(str(trace))
        key = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        return self._profile.key_averages().table(sort_by=key, row_limit=TOP_OPS)
