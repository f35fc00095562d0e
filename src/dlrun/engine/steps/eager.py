"""The textbook train step: zero_grad, backward, step. The path to read first; every faster
step is tested against it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from dlrun.engine.steps.clip import with_norm

if TYPE_CHECKING:
    from torch import nn

    from dlrun.engine.steps.batches import Batch, Step
    from dlrun.engine.steps.clip import Clip
    from dlrun.tasks.base import Task


def textbook(
    optimizer: torch.optim.Optimizer,
    loss_fn: Step,
    backward: bool = True,
    clip: Clip | None = None,
) -> Step:
    """zero_grad, loss, backward, step. ``backward=False`` for a task whose loss() fills every
    ``.grad`` by hand; ``clip``: clip the gradients before the step (the step then returns
    [loss, gradient norm before clipping])."""
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def step(batch: Batch) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(batch)
        if backward:
            loss.backward()
        if clip is None:
            optimizer.step()
            return loss.detach()
        norm = clip([p.grad for p in params if p.grad is not None])
        optimizer.step()
        return with_norm(loss, norm)

    return step


def accumulated(
    optimizer: torch.optim.Optimizer,
    loss_fn: Step,
    backward: bool = True,
    clip: Clip | None = None,
) -> Callable[[Sequence[Batch]], torch.Tensor]:
    """``trainer.accumulate``: one update from a group of batches, each batch's gradient
    weighted by its share of the group's examples, so the update is the one a single batch of
    the whole group would make with a mean loss. Returns the group's mean loss (with the
    gradient norm before clipping, under ``clip``)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def step(group: Sequence[Batch]) -> torch.Tensor:
        sizes = [batch[0].shape[0] for batch in group]
        total = sum(sizes)
        summed: list[torch.Tensor | None] = [None] * len(params)
        mean = None
        for batch, size in zip(group, sizes, strict=True):
            share = size / total
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            if backward:
                loss.backward()
            with torch.no_grad():
                for i, p in enumerate(params):
                    if p.grad is None:
                        continue
                    acc = summed[i]
                    summed[i] = p.grad * share if acc is None else acc.add_(p.grad, alpha=share)
            part = loss.detach() * share
            mean = part if mean is None else mean + part
        for p, g in zip(params, summed, strict=True):
            p.grad = g  # a parameter no batch used keeps no gradient, as in one big batch
        assert mean is not None  # a group holds at least one batch
        if clip is None:
            optimizer.step()
            return mean
        norm = clip([g for g in summed if g is not None])
        optimizer.step()
        return with_norm(mean, norm)

    return step


def no_optimizer(task: Task, model: nn.Module) -> Step:
    """For a task that trains without an optimizer (its loss() updates the model itself)."""

    def step(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return task.loss(model, batch)

    return step
