"""The train step the loop calls once per batch, chosen once per run in ``build()``.

One module per kind of step:

- ``eager``: the textbook zero_grad / backward / step (``trainer.fast=false``, and tasks whose
  gradients are by hand); every other kind is tested against it;
- ``fused``: ``torch.autograd.grad``, then the optimizer's fused kernel on its own state (the
  default, ``trainer.fast=true``);
- ``mlp_kernel``: a small MLP's whole step in NumPy, on the CPU (``trainer.mlp_kernel``), which
  the loop calls once an epoch for all its batches (``whole_epoch``);
- ``cuda_graph``: the fused step replayed from CUDA graphs (``trainer.cuda_graph``, opt-in).

``trainer.grad_clip`` clips inside each of them (``clip.py``; the step then returns its loss and
the gradient norm before clipping); ``trainer.accumulate`` > 1 sums a group of batches' gradients
before one ``optimizer.step()`` (``eager.accumulated``); a per-update schedule (onecycle) steps
after each update.

``trainer.compile`` (torch.compile of the loss) and ``trainer.precision=bf16`` (autocast, CUDA
only) wrap the loss that the eager and fused steps call. The choice and its reason go to the
run's log in one line (``train step: ...``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from dlrun.engine.steps import clip, cuda_graph, eager, fused, mlp_kernel
from dlrun.engine.steps.batches import Batch, Step, batches, grouped, whole_epoch
from dlrun.engine.steps.threads import cpu_threads
from dlrun.errors import DlrunError

if TYPE_CHECKING:
    from torch import nn

    from dlrun.config.trainer import TrainerConfig
    from dlrun.engine.schedules import Schedule
    from dlrun.tasks.base import Task

__all__ = [
    "Batch",
    "Step",
    "batches",
    "build",
    "check",
    "cpu_threads",
    "grouped",
    "whole_epoch",
]

log = logging.getLogger("dlrun")


def check(trainer: TrainerConfig, device: torch.device) -> None:
    """Refuse options this device cannot honour, before any work starts."""
    if trainer.precision == "bf16" and device.type != "cuda":
        raise DlrunError(
            f"trainer.precision=bf16 needs a CUDA device (this run is on {device.type}); "
            "use trainer.precision=fp32 or device=cuda"
        )


def build(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer: TrainerConfig,
    schedule: Schedule | None = None,
) -> Step:
    """The step for this run: train on one batch (a group of them with trainer.accumulate > 1),
    return its loss (detached, on the device; with trainer.grad_clip, [loss, gradient norm])."""
    step = _build(task, model, optimizer, trainer, schedule)
    return schedule.stepping(step) if schedule is not None else step


def _build(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    trainer: TrainerConfig,
    schedule: Schedule | None,
) -> Step:
    if not task.uses_optimizer or optimizer is None:
        _not_graphed(trainer, "this task trains without an optimizer")
        step = eager.no_optimizer(task, model)
        return _chosen("eager", "no optimizer: the task's loss() trains the model", step)
    clipping = clip.build(trainer.grad_clip)
    if task.hand_gradients:  # loss() fills every .grad itself: no autograd
        if trainer.cuda_graph or trainer.compile:
            log.info("trainer.cuda_graph/compile: this task's gradients are by hand; running eager")
        by_hand = lambda batch: task.loss(model, batch)  # noqa: E731
        if trainer.accumulate > 1:
            step = eager.accumulated(optimizer, by_hand, backward=False, clip=clipping)
            why = _accumulating(trainer, "the task's gradients are by hand")
            return _chosen("eager", why, step)
        step = eager.textbook(optimizer, by_hand, backward=False, clip=clipping)
        return _chosen("eager", "the task's gradients are by hand", step)
    loss_fn = _loss(task, model, trainer)
    if trainer.accumulate > 1:
        _not_graphed(trainer, f"trainer.accumulate={trainer.accumulate}")
        step = eager.accumulated(optimizer, loss_fn, clip=clipping)
        return _chosen("eager", _accumulating(trainer, "autograd"), step)
    if not trainer.fast:
        _not_graphed(trainer, "trainer.fast=false")
        step = eager.textbook(optimizer, loss_fn, clip=clipping)
        return _chosen("eager", "trainer.fast=false", step)

    update = fused.direct_update(optimizer)
    kernel = mlp_kernel.build(task, model, optimizer, trainer, update)
    if kernel is not None:
        _not_graphed(trainer, cuda_graph.why_not(task, optimizer, trainer, True))
        why = "the NumPy MLP kernel; trainer.mlp_kernel=false: autograd"
        return _chosen("mlp_kernel", why, kernel)
    step = fused.autograd_step(loss_fn, optimizer, update, clipping)
    name = type(optimizer).__name__
    why = f"{name} fused kernel" if update else f"autograd.grad, then {name}.step(): not fused"
    if trainer.cuda_graph:
        reason = cuda_graph.why_not(task, optimizer, trainer, update is not None)
        if reason is None and schedule is not None:
            # a captured kernel holds the learning rate it was captured with
            reason = f"scheduler={schedule.kind} changes the learning rate between steps"
        if reason is None:
            return _chosen("cuda_graph", why, cuda_graph.graphed(model, optimizer, step))
        _not_graphed(trainer, reason)
    return _chosen("fused", why, step)


def _accumulating(trainer: TrainerConfig, how: str) -> str:
    n = trainer.accumulate
    return f"trainer.accumulate={n}: {how}, gradients of {n} batches summed, then one step()"


def _chosen(kind: str, why: str, step: Step) -> Step:
    log.info("train step: %s (%s)", kind, why)
    return step


def _not_graphed(trainer: TrainerConfig, reason: str | None) -> None:
    if trainer.cuda_graph and reason is not None:
        log.info("trainer.cuda_graph: %s; not captured", reason)


def _loss(task: Task, model: nn.Module, trainer: TrainerConfig) -> Step:
    """The task's loss on a batch, compiled (``trainer.compile``) and in bf16
    (``trainer.precision``) as the run asks."""
    loss_fn: Step = lambda batch: task.loss(model, batch)  # noqa: E731
    if trainer.compile:
        loss_fn = torch.compile(loss_fn)
    if trainer.precision == "bf16":
        inner = loss_fn

        def loss_fn(batch: Batch) -> torch.Tensor:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                return inner(batch).float()

    return loss_fn
