"""The ``scheduler`` group: the learning rate over a run, built on torch.optim.lr_scheduler.

Every option is one of torch's schedulers (a warm-up is ``LinearLR`` then ``SequentialLR``), so
its ``state_dict`` is torch's and goes into the checkpoints as it is. The loop steps it once per
epoch (``plateau`` only on validated epochs, on the task's objective in the task's direction);
``onecycle`` is stepped after every update instead, by a wrapper around the train step. Each step
kind reads ``group["lr"]`` when it updates, so a new rate takes effect at the next update.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import lr_scheduler

from dlrun.config.trainer import (
    CosineSchedulerConfig,
    ExponentialSchedulerConfig,
    MultiStepSchedulerConfig,
    OneCycleSchedulerConfig,
    PlateauSchedulerConfig,
    SchedulerConfig,
    StepSchedulerConfig,
)

if TYPE_CHECKING:
    from dlrun.engine.steps.batches import Step


class Schedule:
    """One run's scheduler and when it steps."""

    def __init__(
        self,
        scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau,
        kind: str,
        objective: str,
    ) -> None:
        self.scheduler, self.kind, self.objective = scheduler, kind, objective
        self.per_update = kind == "onecycle"

    def epoch_end(self, validation: dict[str, float] | None) -> None:
        """After an epoch (``validation``: its metrics, None when it did not validate)."""
        if self.per_update:
            return
        if isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau):
            value = None if validation is None else validation.get(self.objective)
            if value is not None and not math.isnan(value):
                self.scheduler.step(value)
            return
        self.scheduler.step()

    def stepping(self, step: Step) -> Step:
        """``step`` followed by a scheduler step (onecycle: once per update); else ``step``."""
        if not self.per_update:
            return step
        advance = self.scheduler.step

        def scheduled(batch: Any) -> torch.Tensor:
            out = step(batch)
            advance()
            return out

        return scheduled

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "state": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Continue a checkpoint's schedule; False when it holds another kind (then this one
        starts from its beginning). The optimizer's rates follow the restored schedule."""
        if state.get("kind") != self.kind:
            return False
        self.scheduler.load_state_dict(state["state"])
        optimizer = self.scheduler.optimizer
        for group, lr in zip(optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
        return True


def build(
    cfg: SchedulerConfig,
    optimizer: torch.optim.Optimizer | None,
    epochs: int,
    updates_per_epoch: int,
    maximize: bool,
    objective: str,
) -> Schedule | None:
    """The run's schedule (None: ``scheduler=none``, or a task without an optimizer)."""
    if optimizer is None or cfg.kind == "none":
        return None
    # the fused and kernel steps update the optimizer's state without calling its step(), which
    # is what this warning counts: the order is right (update, then the scheduler)
    warnings.filterwarnings(
        "ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before", category=UserWarning
    )
    made: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau
    if isinstance(cfg, StepSchedulerConfig):
        made = lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma)
    elif isinstance(cfg, MultiStepSchedulerConfig):
        made = lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    elif isinstance(cfg, ExponentialSchedulerConfig):
        made = lr_scheduler.ExponentialLR(optimizer, cfg.gamma)
    elif isinstance(cfg, CosineSchedulerConfig):
        made = _cosine(cfg, optimizer, epochs)
    elif isinstance(cfg, OneCycleSchedulerConfig):
        assert cfg.max_lr is not None  # refused at compose time
        made = lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.max_lr,
            total_steps=max(1, epochs * updates_per_epoch),
            pct_start=cfg.pct_start,
            cycle_momentum=cfg.cycle_momentum,
        )
    elif isinstance(cfg, PlateauSchedulerConfig):
        made = lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max" if maximize else "min",
            factor=cfg.factor,
            patience=cfg.patience,
            threshold=cfg.threshold,
            min_lr=cfg.min_lr,
        )
    else:
        raise TypeError(f"no scheduler for {type(cfg).__name__}")
    return Schedule(made, cfg.kind, objective)


def _cosine(
    cfg: CosineSchedulerConfig, optimizer: torch.optim.Optimizer, epochs: int
) -> lr_scheduler.LRScheduler:
    """Cosine to min_lr at the run's last epoch, after warmup_epochs of LinearLR."""
    cosine_epochs = max(1, epochs - cfg.warmup_epochs)
    if cfg.warmup_epochs == 0:
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=cosine_epochs, eta_min=cfg.min_lr)
    warmup = lr_scheduler.LinearLR(
        optimizer, start_factor=cfg.warmup_start_factor, total_iters=cfg.warmup_epochs
    )
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=cosine_epochs, eta_min=cfg.min_lr)
    return lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[cfg.warmup_epochs])
