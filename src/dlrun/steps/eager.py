"""The textbook train step: zero_grad, backward, step. The path to read first; every faster
step is tested against it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import nn

    from dlrun.steps.batches import Batch, Step
    from dlrun.tasks.base import Task


def textbook(optimizer: torch.optim.Optimizer, loss_fn: Step, backward: bool = True) -> Step:
    """zero_grad, loss, backward, step. ``backward=False`` for a task whose loss() fills every
    ``.grad`` by hand."""

    def step(batch: Batch) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(batch)
        if backward:
            loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def no_optimizer(task: Task, model: nn.Module) -> Step:
    """For a task that trains without an optimizer (its loss() updates the model itself)."""

    def step(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return task.loss(model, batch)

    return step
