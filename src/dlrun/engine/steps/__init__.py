"""The train step the loop calls once per batch, chosen once per run in ``build()``.

One module per kind of step:

- ``eager``: the textbook zero_grad / backward / step (``trainer.fast=false``, and tasks whose
  gradients are by hand); every other kind is tested against it;
- ``fused``: ``torch.autograd.grad``, then the optimizer's fused kernel on its own state (the
  default, ``trainer.fast=true``);
- ``mlp_kernel``: a small MLP's whole step in NumPy, on the CPU (``trainer.mlp_kernel``), which
  the loop calls once an epoch for all its batches (``whole_epoch``);
- ``cuda_graph``: the fused step replayed from CUDA graphs (``trainer.cuda_graph``): the default
  on CUDA wherever the step allows it (``cuda_graph.choose``).

``trainer.grad_clip`` clips inside each of them (``clip.py``; the step then returns its loss and
the gradient norm before clipping); ``trainer.accumulate`` > 1 sums a group of batches' gradients
before one ``optimizer.step()`` (``eager.accumulated``); a per-update schedule (onecycle) steps
after each update.

``trainer.compile`` (torch.compile of the loss) and ``trainer.precision=bf16`` (autocast, CUDA
only) wrap the loss that the eager and fused steps call; a step too small to gain from them
(``MIN_STEP_FLOP``) runs fp32 instead of bf16, and a compiled one says in the log that it will
not help. The choice and its reason go to the run's log in one line (``train step: ...``).
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
    clipping = clip.build(trainer.grad_clip)
    update = fused.direct_update(optimizer) if optimizer is not None else None
    facts = cuda_graph.Facts(
        device=task.device.type,
        optimizer=type(optimizer).__name__ if task.uses_optimizer and optimizer else None,
        direct=update is not None,
        hand_gradients=task.hand_gradients,
        accumulate=trainer.accumulate,
        fast=trainer.fast,
        compile=trainer.compile,
        schedule=schedule.kind if schedule is not None else None,
    )
    graph, reason = cuda_graph.choose(trainer.cuda_graph, facts)
    if reason is not None:
        log.info("trainer.cuda_graph=%s: %s; not captured", _setting(trainer), reason)
    if not task.uses_optimizer or optimizer is None:
        step = eager.no_optimizer(task, model)
        return _chosen("eager", "no optimizer: the task's loss() trains the model", step)
    if task.hand_gradients:  # loss() fills every .grad itself: no autograd
        if trainer.compile:
            log.info("trainer.compile: this task's gradients are by hand; running eager")
        by_hand = lambda batch: task.loss(model, batch)  # noqa: E731
        if trainer.accumulate > 1:
            step = eager.accumulated(optimizer, by_hand, backward=False, clip=clipping)
            why = _accumulating(trainer, "the task's gradients are by hand")
            return _chosen("eager", why, step)
        step = eager.textbook(optimizer, by_hand, backward=False, clip=clipping)
        return _chosen("eager", "the task's gradients are by hand", step)
    loss_fn = _loss(task, model, trainer)
    if trainer.accumulate > 1:
        step = eager.accumulated(optimizer, loss_fn, clip=clipping)
        return _chosen("eager", _accumulating(trainer, "autograd"), step)
    if not trainer.fast:
        step = eager.textbook(optimizer, loss_fn, clip=clipping)
        return _chosen("eager", "trainer.fast=false", step)

    kernel = mlp_kernel.build(task, model, optimizer, trainer, update)
    if kernel is not None:
        why = "the NumPy MLP kernel; trainer.mlp_kernel=false: autograd"
        return _chosen("mlp_kernel", why, kernel)
    step = fused.autograd_step(loss_fn, optimizer, update, clipping)
    name = type(optimizer).__name__
    why = f"{name} fused kernel" if update else f"autograd.grad, then {name}.step(): not fused"
    if graph:
        why += f"; trainer.cuda_graph={_setting(trainer)}"
        return _chosen("cuda_graph", why, cuda_graph.graphed(model, optimizer, step))
    return _chosen("fused", why, step)


def _setting(trainer: TrainerConfig) -> str:
    return {None: "auto", True: "true", False: "false"}[trainer.cuda_graph]


def _accumulating(trainer: TrainerConfig, how: str) -> str:
    n = trainer.accumulate
    return f"trainer.accumulate={n}: {how}, gradients of {n} batches summed, then one step()"


def _chosen(kind: str, why: str, step: Step) -> Step:
    log.info("train step: %s (%s)", kind, why)
    return step


# A train step's matrix work (about 6 FLOP per parameter per example: forward, two backward
# products) below which bf16 and torch.compile cannot pay. Such a step is launch-bound: its
# time is the CPU issuing kernels, which bf16's cast kernels only add to and which a compiled
# graph still pays per launch (measured on an H200: bf16 4x slower than fp32, compile no faster,
# for mnist-mlp at batch 64, 0.039 GFLOP a step). 2**33 (8.6 GFLOP, some 100 us of fp32 work on a
# current GPU) is a choice to confirm on a GPU with benchmarks/cuda_check.sh.
MIN_STEP_FLOP = 2**33


def step_flop(model: nn.Module, batch_size: int) -> int:
    """A dense model's matrix work per train step (convolutions reuse weights: more)."""
    return 6 * batch_size * sum(p.numel() for p in model.parameters() if p.requires_grad)


def bf16_why_not(device: str, flop: int) -> str | None:
    """Why bf16 autocast would be slower than fp32 for this step (None: it may pay)."""
    if device == "cuda" and flop < MIN_STEP_FLOP:
        return (
            f"a step of {flop / 1e9:.2g} GFLOP is launch-bound, where bf16's casts only add "
            f"kernels (it pays from {MIN_STEP_FLOP / 1e9:.2g} GFLOP)"
        )
    return None


def compile_why_not(flop: int) -> str | None:
    """Why torch.compile will not speed this step up (None: it may)."""
    if flop < MIN_STEP_FLOP:
        return (
            f"a step of {flop / 1e9:.2g} GFLOP is launch-bound: compiling costs seconds up front "
            f"and saves little per step (it may pay from {MIN_STEP_FLOP / 1e9:.2g} GFLOP; on "
            "CUDA trainer.cuda_graph is the fast step for small models)"
        )
    return None


def _loss(task: Task, model: nn.Module, trainer: TrainerConfig) -> Step:
    """The task's loss on a batch, compiled (``trainer.compile``) and in bf16
    (``trainer.precision``) as the run asks and where they can pay."""
    loss_fn: Step = lambda batch: task.loss(model, batch)  # noqa: E731
    flop = step_flop(model, trainer.batch_size)
    if trainer.compile:
        reason = compile_why_not(flop)
        if reason is not None:
            log.info("trainer.compile=true: %s; compiling as asked", reason)
        loss_fn = torch.compile(loss_fn)
    bf16 = trainer.precision == "bf16"
    if bf16 and (reason := bf16_why_not(task.device.type, flop)) is not None:
        log.info("trainer.precision=bf16: %s; running fp32", reason)
        bf16 = False
    if bf16:
        inner = loss_fn

        def loss_fn(batch: Batch) -> torch.Tensor:
            # no cast cache: a CUDA graph may capture this, and the cache outlives a capture
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False):
                return inner(batch).float()

    return loss_fn
