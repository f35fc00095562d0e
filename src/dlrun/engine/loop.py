"""The one train/validate loop every task runs through.

Data lives on the device; a batch is an index slice of a per-epoch permutation drawn from the
loop's own generator (checkpointed, so a resumed run draws the same batches). Losses stay on the
device and are read once per epoch, together with a NaN/inf check of the losses and weights: no
per-step .item(), .cpu() or printing.
"""

from __future__ import annotations

import itertools
import math
import operator
import time
from typing import TYPE_CHECKING, Protocol

import torch

from dlrun import compat
from dlrun.engine import steps
from dlrun.engine.distributed import Strategy
from dlrun.errors import ConfigError, Interrupted, NonFiniteLoss, defined_at

if TYPE_CHECKING:
    from torch import nn

    from dlrun.engine.profiling import Profiler
    from dlrun.engine.training import Training
    from dlrun.tasks.base import Task


class Hooks(Protocol):
    """What the loop reports to (metrics, checkpoints, console); the loop writes nothing itself."""

    def on_train(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_validate(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, epoch: int, checkpoint: bool) -> None: ...

    def stop_requested(self) -> int | None:
        """A signal number when the user asked to stop (checked once per epoch)."""
        ...


def to_floats(metrics: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """One host sync for a whole dict of 0-dim tensors."""
    keys = list(metrics)
    values = [torch.as_tensor(metrics[k]) for k in keys]
    numbers = torch.stack([v.double().reshape(()).cpu() for v in values]).tolist() if keys else []
    return {  # counts stay integers
        k: int(x) if not (v.is_floating_point() or v.is_complex()) else x
        for k, v, x in zip(keys, values, numbers, strict=True)
    }


def validate(task: Task, model: nn.Module) -> dict[str, float]:
    start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        metrics = to_floats(task.evaluate(model))
    if task.objective not in metrics:  # else the run would end `completed` with no objective
        raise ConfigError(
            f"task {task.name}: its objective {task.objective!r} "
            f"({defined_at(type(task))}) "
            f"is not a key of what evaluate() returns ({', '.join(metrics) or 'nothing'}); "
            "set objective to one of them, or return it from evaluate()"
        )
    metrics["time_s"] = time.perf_counter() - start
    return metrics


def epoch_loss(
    epoch: int,
    losses: list[torch.Tensor] | torch.Tensor,
    weights: list[float],
    params: list[torch.Tensor],
    strategy: Strategy | None = None,
) -> float:
    """The epoch's mean training loss, read in one host sync that also checks the weights.

    Raises NonFiniteLoss naming the first step whose loss was NaN or infinite (or the last step,
    when its update left the weights non-finite), so a diverging run stops at once.
    """
    weighed = [p.detach() for p in params if p.numel()]
    return epoch_values(epoch, losses, weights, weighed, strategy)[0]


def epoch_values(
    epoch: int,
    losses: list[torch.Tensor] | torch.Tensor,
    weights: list[float],
    params: list[torch.Tensor],
    strategy: Strategy | None = None,
    clipped: bool = False,
) -> tuple[float, list[float]]:
    """:func:`epoch_loss`, and with ``clipped`` (each step returned [loss, gradient norm]) the
    steps' gradient norms too, read in the same host sync. ``losses``: one per step, or a
    whole epoch's in one tensor (:func:`steps.whole_epoch`); ``params``: the weights, detached
    and non-empty (the loop makes the list once)."""
    count = losses.shape[0] if isinstance(losses, torch.Tensor) else len(losses)
    if count == 0:
        return 0.0, []
    # the step losses and each weight's largest magnitude (NaN or inf where a weight is), in a
    # few ops: a small model's epoch is short, and every op here costs as much as a step's
    norms = compat.foreach_norm(params, math.inf) if params else []
    if clipped:  # [loss, norm] per step, then the weights' norms: split apart in Python
        pairs = (losses if isinstance(losses, torch.Tensor) else torch.stack(losses)).reshape(-1)
        numbers = (torch.cat([pairs, torch.stack(norms)]) if norms else pairs).tolist()
        steps_end = 2 * count
        grad_norms = numbers[1:steps_end:2]
        numbers = numbers[0:steps_end:2] + numbers[steps_end:]
    elif isinstance(losses, torch.Tensor):  # a whole epoch's losses from one call
        numbers = losses.tolist() + (torch.stack(norms).tolist() if norms else [])
        grad_norms = []
    else:
        numbers = torch.stack([*losses, *norms]).tolist()
        grad_norms = []
    per_step = numbers[:count]
    value = sum(map(operator.mul, weights, per_step))  # as many weights as steps
    checked = value if all(map(math.isfinite, numbers)) else math.nan
    if strategy is not None and strategy.world_size > 1:  # over every process's shard: all agree
        value, checked = strategy.mean(
            torch.tensor([value, checked], dtype=torch.float64, device=losses[0].device)
        ).tolist()
    if math.isfinite(checked):
        return value, grad_norms
    bad = [i for i, x in enumerate(per_step) if not math.isfinite(x)]
    step = bad[0] if bad else count - 1
    raise NonFiniteLoss(epoch, step + 1, count, per_step[step])


def train_row(
    loss: float,
    seconds: float,
    optimizer: torch.optim.Optimizer | None,
    lr: float | None,
    grad_norms: list[float],
) -> dict[str, float]:
    """A train row: the loss, the time, the learning rate of the epoch's first update and, with
    trainer.grad_clip, the mean and largest gradient norm before clipping."""
    row = {"loss": loss, "time_s": seconds}
    if optimizer is not None and lr is not None:
        row["lr"] = lr
    if grad_norms:
        row["grad_norm"] = sum(grad_norms) / len(grad_norms)
        row["grad_norm_max"] = max(grad_norms)
    return row


def fit(
    training: Training,
    hooks: Hooks,
    start_epoch: int = 0,
    validated_epoch: int | None = None,
    strategy: Strategy | None = None,
    profiler: Profiler | None = None,
) -> int:
    """Train epochs start_epoch+1 .. trainer.epochs; returns the last epoch completed.

    ``strategy`` shares the epoch out among data-parallel processes (default: one process);
    the training's ``schedule`` sets the learning rate between epochs (or updates) and its
    ``stopper`` ends the run early when the monitored validation value stops improving;
    ``profiler`` (``trainer.profile_steps``) records the first steps of the run."""
    task, model, optimizer = training.task, training.model, training.optimizer
    trainer, generator = training.trainer, training.generator
    schedule, stopper = training.schedule, training.stopper
    strategy = strategy or Strategy()
    data = task.train_data
    total = data[0].shape[0] if data else 0
    n = strategy.shard_size(total)  # this process's examples per epoch
    bs = trainer.batch_size
    # debugging: an epoch cut short to its first batches, or the same first batches every epoch
    limit = min((x for x in (trainer.limit_batches, trainer.overfit_batches) if x), default=None)
    # one example an epoch (k-means: all the points as one batch) has no order to draw: no
    # gather, which would copy the whole data set each epoch
    shuffle = trainer.shuffle and not trainer.overfit_batches and total > 1
    # weight of each batch's mean loss in the epoch's mean loss (the last batch may be partial)
    sizes = [min(bs, n - s) for s in range(0, n, bs)][:limit]
    trained = sum(sizes)  # n unless the epoch is cut short
    weights = [size / trained for size in sizes]
    group = trainer.accumulate
    if group > 1:  # one loss per update: the group's mean over its examples
        weights = [sum(weights[i : i + group]) for i in range(0, len(weights), group)]
    step = steps.build(task, model, optimizer, trainer, schedule)
    if profiler is not None:
        step = profiler.wrap(step)
    whole_epoch = steps.whole_epoch(step) if group == 1 else None
    # the weights the epoch's check reads, detached once: views of the live parameters
    params = [p.detach() for p in model.parameters() if p.is_floating_point() and p.numel()]
    clipped = trainer.grad_clip.on and optimizer is not None
    lr_group = optimizer.param_groups[0] if optimizer is not None else {}

    validate_every, log_every = trainer.every("validate_every"), trainer.every("log_every")
    epoch = start_epoch
    for epoch in range(start_epoch + 1, trainer.epochs + 1):
        begin = time.perf_counter()
        if not model.training:  # validation left it in eval mode
            model.train()
        order = torch.randperm(total, generator=generator, device=task.device) if shuffle else None
        order = strategy.shard(order, total, task.device)
        if order is not None and len(sizes) * bs < len(order):  # gather only what is trained
            order = order[: len(sizes) * bs]
        lr = lr_group.get("lr")  # the rate of this epoch's first update
        if whole_epoch is not None:  # the MLP kernel: the same batches, in one call
            losses = whole_epoch(data, order, bs, len(sizes))
        else:
            feed = itertools.islice(steps.batches(data, order, bs, trainer.fast), len(sizes))
            losses = [step(batch) for batch in (steps.grouped(feed, group) if group > 1 else feed)]

        train_loss, grad_norms = epoch_values(  # the epoch's one host sync
            epoch, losses, weights, params, strategy, clipped
        )
        train_s = time.perf_counter() - begin
        last = epoch == trainer.epochs
        stop = task.converged(model)
        signum = hooks.stop_requested()
        val = None
        if last or stop or epoch % validate_every == 0:
            val = validate(task, model)
            if stopper is not None and stopper.update(epoch, val):
                stop = True
        if schedule is not None:  # the next epoch's rate, before any checkpoint (best.pt too)
            schedule.epoch_end(val)
        if last or stop or epoch % log_every == 0:
            hooks.on_train(epoch, train_row(train_loss, train_s, optimizer, lr, grad_norms))
        if val is not None:
            hooks.on_validate(epoch, val)
            validated_epoch = epoch
        checkpoint = (
            last
            or stop
            or signum is not None
            or (trainer.checkpoint_every > 0 and epoch % trainer.checkpoint_every == 0)
        )
        hooks.on_epoch_end(epoch, checkpoint)
        if signum is not None:
            raise Interrupted(signum)
        if stop:
            break

    if validated_epoch != epoch:  # e.g. trainer.epochs=0: still score the model once
        hooks.on_validate(epoch, validate(task, model))
    if epoch == start_epoch:  # nothing trained here: still leave a checkpoint to continue from
        hooks.on_epoch_end(epoch, True)
    return epoch
