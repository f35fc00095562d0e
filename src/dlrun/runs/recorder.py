"""The loop's hooks: metrics rows, console lines, best.pt and last.pt.

The recorder keeps its own account of what it saved (``epoch``, ``saved_epoch``) and returns it
from every save; the run reads that account when it writes its summary or says how to go on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from dlrun.engine import checkpoint
from dlrun.engine.last_good import LastGood
from dlrun.rundir import layout as rundir
from dlrun.runs import stop_reasons as failures

if TYPE_CHECKING:
    from pathlib import Path

    from dlrun.engine.distributed import Strategy
    from dlrun.engine.training import Training
    from dlrun.rundir.metrics_log import MetricsLog
    from dlrun.runs.console import Console
    from dlrun.runs.interrupt import StopRequest


# how often an epoch that writes nothing looks for its run directory (a checkpoint always does):
# a short epoch would spend more on the two stats than on its steps
CHECK_EVERY_S = 0.25


@dataclass(frozen=True)
class Outputs:
    """Where a run's records go: its directory, its metrics log and the console."""

    run_dir: rundir.RunDir
    history: MetricsLog
    console: Console


class Recorder:
    def __init__(
        self,
        outputs: Outputs,
        training: Training,
        strategy: Strategy,
        stop: StopRequest,
        config: dict[str, Any],
        resumed: checkpoint.Restored | None = None,
    ) -> None:
        """``config``: the resolved config as plain data, recorded in every checkpoint."""
        self.run_dir, self.history, self.console = outputs.run_dir, outputs.history, outputs.console
        self.training, self.strategy, self.stop, self.config = training, strategy, stop, config
        run_dir = self.run_dir
        self.task = training.task
        self.writes = strategy.is_main  # under torchrun only rank 0 writes checkpoints
        self.epoch = resumed.epoch if resumed else 0  # the last epoch completed
        self.best = resumed.best if resumed else None
        # the epoch in this run's last.pt (a resume from a .pt file elsewhere has none yet)
        self.saved_epoch = resumed.epoch if resumed and resumed.continues(run_dir) else None
        self.best_state: dict[str, Any] | None = None  # best.pt's content, not yet written
        self.last_good = LastGood(training.model, training.optimizer, training.generator)
        self._next_check = 0.0  # time.monotonic() of the next look for the run directory
        if self.saved_epoch is None:
            self.last_good.keep(self.epoch)

    # ------------------------------------------------------------------ the loop's hooks

    def on_train(self, epoch: int, values: dict[str, float]) -> None:
        self.history.append(epoch, "train", values)
        self.console.epoch(epoch, "train", values)

    def on_validate(self, epoch: int, values: dict[str, float]) -> None:
        self.history.append(epoch, "val", values)
        self.console.epoch(epoch, "val", values)
        value = values.get(self.task.objective)
        if value is None or math.isnan(value):
            return
        old = None if self.best is None else self.best.get(self.task.objective)
        if old is None or (value > old if self.task.maximize else value < old):
            self.best = {"epoch": epoch, **{k: v for k, v in values.items() if k != "time_s"}}
            # kept in memory and written with last.pt: one file write (and fsync) per
            # checkpoint, not one per improvement
            if self.writes:
                self.best_state = _copied(self.state(epoch))

    def on_epoch_end(self, epoch: int, save: bool) -> None:
        # a write into a removed directory would remake it; a removed one stops the run soon
        now = time.monotonic()
        if self.writes and (save or now >= self._next_check):
            self.run_dir.check_present()
            self._next_check = now + CHECK_EVERY_S
        if self.writes and save:
            self.save_checkpoint(epoch)
        elif self.writes:
            self.last_good.keep(epoch)  # under torchrun rank 0 keeps every checkpoint
        self.epoch = epoch
        self.console.advance(epoch)

    def stop_requested(self) -> int | None:
        return self.strategy.agree(self.stop.signum, self.task.device)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, epoch: int) -> int:
        """best.pt (when a better epoch waits) and last.pt; returns the epoch last.pt holds."""
        self._save_best()
        self._save(self.run_dir.last, epoch)
        self.saved_epoch = epoch
        self.last_good.epoch = None  # last.pt holds this epoch
        return epoch

    def save_last_good(self) -> int | None:
        """After a NaN: last.pt gets the last finite epoch kept in memory, if newer, and best.pt
        the best epoch not written yet. Returns the epoch last.pt holds (None: none yet)."""
        if not self.writes:
            return self.saved_epoch
        self._save_best()
        epoch = self.last_good.restore()
        if epoch is not None:
            self._save(self.run_dir.last, epoch)
            self.saved_epoch = epoch
        return self.saved_epoch

    def _save_best(self) -> None:
        if self.best_state is not None:
            self._save(self.run_dir.best, self.best_state["epoch"], self.best_state)
            self.best_state = None

    def _save(self, path: Path, epoch: int, state: dict[str, Any] | None = None) -> None:
        """Write a checkpoint; a full disk stops the run with the previous file unchanged."""
        try:
            checkpoint.save(path, state if state is not None else self.state(epoch))
        except OSError as exc:
            raise failures.write_failed(
                exc,
                f"checkpoint of epoch {epoch} ({path.name}) not written",
                self.saved_epoch,
                self.run_dir.path,
                self.strategy.command(),
            ) from exc

    def state(self, epoch: int) -> dict[str, Any]:
        return checkpoint.make_state(self.training, epoch, self.best, self.config)


def _copied(obj: Any) -> Any:
    """A snapshot of a checkpoint state: tensors cloned, so later training does not change it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _copied(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_copied(v) for v in obj)
    return obj
