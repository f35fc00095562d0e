"""Early stopping (``trainer.early_stopping``): stop after ``patience`` validations without an
improvement larger than ``min_delta`` of the monitored value.

The counter and the best value are plain numbers, saved in every checkpoint, so a resumed run
stops at the very epoch an uninterrupted one would. A task's own rule (k-means' converged
centres, a nothing-to-learn kernel) still stops it as before.
"""

from __future__ import annotations

import math
from typing import Any

from dlrun.config.trainer import EarlyStoppingConfig


class EarlyStopping:
    def __init__(self, cfg: EarlyStoppingConfig, objective: str, maximize: bool) -> None:
        self.patience, self.min_delta = cfg.patience, cfg.min_delta
        self.key = objective if cfg.monitor == "objective" else "loss"
        self.maximize = maximize if cfg.monitor == "objective" else False
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.waited = 0  # validations since the last improvement
        self.stopped_epoch: int | None = None

    def update(self, epoch: int, validation: dict[str, float]) -> bool:
        """Count one validation; True: stop now."""
        value = validation.get(self.key)
        if value is None or math.isnan(value):
            return False
        gain = math.inf if self.best is None else (value - self.best) * (1 if self.maximize else -1)
        if gain > self.min_delta:
            self.best, self.best_epoch, self.waited = value, epoch, 0
            return False
        self.waited += 1
        if self.waited >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def record(self) -> dict[str, Any] | None:
        """summary.json's ``stopped_early`` (None: the run was not stopped early)."""
        if self.stopped_epoch is None:
            return None
        return {
            "epoch": self.stopped_epoch,
            "best_epoch": self.best_epoch,
            "monitor": self.key,
            "best": self.best,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.waited = int(state.get("waited", 0))


def build(cfg: EarlyStoppingConfig, objective: str, maximize: bool) -> EarlyStopping | None:
    """None when off (patience 0): the loop then does nothing extra."""
    return EarlyStopping(cfg, objective, maximize) if cfg.patience > 0 else None
