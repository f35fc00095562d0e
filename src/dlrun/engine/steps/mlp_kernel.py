"""A whole train step of a small MLP on the CPU without per-op dispatch: forward, backward and
update written once in NumPy, on the very memory of the model's parameters.

For FizzBuzz's 10-100-4 net a step is microseconds of arithmetic, while eager PyTorch spends a
few dozen dispatched ops and an autograd graph on it: the tutorial's loop is overhead-bound, and
NumPy's per-op cost is far lower than torch's dispatch for such small matrices. The arrays are
zero-copy views of the parameters and of the optimizer's own state tensors, so checkpoints,
resume, metrics and the rest of the run see an ordinary torch model; only the step's arithmetic
moves.

It applies to ``nn.Sequential`` stacks of ``Linear`` layers (with biases) and ReLU, Tanh,
Sigmoid or Identity, optionally after a ``Flatten``; a task whose loss is one of the shared
criteria (cross-entropy, MSE/2); SGD, Adam or AdamW with fused kernels, whose update the kernel
calls on the NumPy gradients; float32 or float64 on the CPU. Anything else trains through the
autograd step. ``tests/engine/test_steps_mlp_kernel.py`` holds the kernel to autograd and
torch.optim (the sums run in NumPy's BLAS, so the two agree to rounding, not bit for bit).
``trainer.mlp_kernel=false`` turns it off. The arithmetic is in ``mlp_maths.py``; the loop
calls the step's ``epoch`` once an epoch (plain SGD then trains on ``[W | b]`` weights).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dlrun import compat
from dlrun.engine.steps.batches import EPOCH_GATHER_BYTES, Batch, Step
from dlrun.engine.steps.fused import Update, fused_kind
from dlrun.engine.steps.mlp_maths import AugmentedSGD, clip, gradients
from dlrun.tasks.base import Task

if TYPE_CHECKING:
    from dlrun.config.trainer import TrainerConfig
log = logging.getLogger("dlrun")

ACTIVATIONS = {nn.Identity: None, nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
CRITERIA = ("cross_entropy", "half_mse")
# The kernel saves a fixed cost per op; NumPy's single-threaded elementwise maths loses that
# back on big activations. Past this size autograd is faster (docs/performance.md has the
# measured crossover).
MAX_ACTIVATIONS = 2**18  # batch size x the Linear layers' output features


def layout(model: nn.Module) -> tuple[bool, list[str | None]] | None:
    """(flatten first, the activation after each Linear), or None for any other model.

    Exact types only, without hooks: a subclass or a hook may compute something else.
    """
    modules = [model] if type(model) is nn.Linear else None
    if type(model) is nn.Sequential:
        modules = list(model)
    if not modules or any(compat.has_hooks(m) for m in [model, *modules]):
        return None
    flatten = type(modules[0]) is nn.Flatten
    if flatten:
        if modules[0].start_dim != 1 or modules[0].end_dim != -1:
            return None
        modules = modules[1:]
    acts: list[str | None] = []
    taken: list[bool] = []  # whether the layer's activation slot is used
    for m in modules:
        if type(m) is nn.Linear:
            if m.bias is None:
                return None
            acts.append(None)
            taken.append(False)
        elif type(m) in ACTIVATIONS and acts and not taken[-1]:
            acts[-1] = ACTIVATIONS[type(m)]
            taken[-1] = type(m) is not nn.Identity
        elif type(m) is not nn.Identity or not acts:
            return None
    return (flatten, acts) if acts else None


# --------------------------------------------------------------------------- building a step


def why_not(task: Task, model: nn.Module, trainer: TrainerConfig) -> str | None:
    """Why this run cannot use the kernel (None: it can), before looking at the optimizer."""
    if not trainer.mlp_kernel or not trainer.fast:
        return "turned off"
    if task.device.type != "cpu":
        return f"device {task.device.type} (the kernel is for the CPU)"
    if trainer.compile or trainer.precision != "fp32" or trainer.detect_anomaly:
        return "trainer.compile, trainer.precision or trainer.detect_anomaly is set"
    own_loss = type(task).loss is not Task.loss  # a task (or a test) that overrides loss()
    if task.criterion not in CRITERIA or task.hand_gradients or own_loss:
        return "the task's loss is its own"
    shape = layout(model)
    if shape is None:
        return "the model is not a stack of Linear layers and activations"
    rows = min(trainer.batch_size, len(task.train_data[0])) if task.train_data else 0
    width = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    if rows * width > MAX_ACTIVATIONS:
        return f"its activations ({rows} x {width} a step) are big enough for autograd"
    dtypes = {p.dtype for p in model.parameters()}
    if not dtypes <= {torch.float32, torch.float64} or len(dtypes) != 1:
        return "the parameters are not all float32 or all float64"
    if not all(p.is_contiguous() for p in model.parameters()):
        return "a parameter is not contiguous (the fused update wants its gradient's layout)"
    dtype = next(iter(dtypes))
    data = task.train_data
    target = torch.int64 if task.criterion == "cross_entropy" else dtype
    if len(data) != 2 or data[0].dtype != dtype or data[1].dtype != target:
        return "the training data are not (inputs, targets) of the parameters' dtypes"
    # rows of features in, class indices or (for MSE/2) targets shaped like the outputs: no
    # broadcasting, which autograd would do differently
    outputs = [m for m in model.modules() if type(m) is nn.Linear][-1].out_features
    want = (len(data[0]),) if target != dtype else (len(data[0]), outputs)
    if (data[0].dim() != 2 and not shape[0]) or tuple(data[1].shape) != want:
        return "the training data are not (rows, features) inputs and (rows,) or (rows, outputs)"
    return None


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def build(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer: TrainerConfig,
    update: Update | None,
) -> Step | None:
    """The kernel step for this run, or None when it does not apply (see why_not).

    ``update`` is the optimizer's fused kernel called on its own state (steps.fused), so the
    update and the checkpoints are torch.optim's whichever step computed the gradients; plain
    SGD (no momentum, no weight decay) updates in place from NumPy, its -lr folded into the
    loss's gradient.
    """
    reason = why_not(task, model, trainer)
    params = list(model.parameters())
    shape = layout(model)
    if reason is None and update is None:
        reason = f"{type(optimizer).__name__} is not SGD, Adam or AdamW with fused kernels"
    elif reason is None and (
        shape is None
        or len(params) != 2 * len(shape[1])
        or not _same(params, optimizer.param_groups[0]["params"])
    ):
        reason = "the optimizer does not train exactly the layers' parameters"
    if reason is not None or shape is None or update is None:
        log.debug("trainer.mlp_kernel: not used (%s)", reason)
        return None
    flatten, acts = shape
    criterion = task.criterion
    group = optimizer.param_groups[0]
    sgd = fused_kind(optimizer) is torch.optim.SGD
    arrays = [p.detach().numpy() for p in params]  # the parameters' own memory
    dtype = params[0].dtype
    np_dtype = arrays[0].dtype
    # trainer.grad_clip: clipped in NumPy, the norm returned beside the loss
    clipping, max_norm, value = (
        trainer.grad_clip.on,
        trainer.grad_clip.max_norm,
        trainer.grad_clip.value,
    )

    # plain SGD's whole epochs train on [W | b] copies of the weights (mlp_maths)
    augmented = AugmentedSGD(arrays, acts, criterion) if sgd else None
    limits = (max_norm, value) if clipping else None

    def plain_sgd() -> bool:
        return sgd and group["momentum"] == 0 and group["weight_decay"] == 0 and group["lr"] > 0

    def train(xs: np.ndarray, ys: np.ndarray) -> float | tuple[float, float]:
        """One step on NumPy arrays: its loss (with clipping, and the gradient norm)."""
        lr = group["lr"]  # read at every step: a schedule changes it between steps
        if plain_sgd():
            loss, grads = gradients(arrays, acts, criterion, xs, ys, -lr)
            norm = clip(grads, -lr, max_norm, value) if clipping else 0.0
            for p, g in zip(arrays, grads, strict=True):
                p += g  # p - lr * grad
        else:
            loss, grads = gradients(arrays, acts, criterion, xs, ys)
            norm = clip(grads, 1.0, max_norm, value) if clipping else 0.0
            with torch.no_grad():
                update(params, [torch.from_numpy(g) for g in grads])
        return (loss, norm) if clipping else loss

    def step(batch: Batch) -> torch.Tensor:
        x, y = batch
        xs = x.numpy()
        if flatten:
            xs = xs.reshape(len(xs), -1)
        with np.errstate(all="ignore"):  # a diverging run's NaN is the loop's to report
            out = train(xs, y.numpy())
        if clipping:  # from a NumPy pair: cheaper than a torch op on Python numbers
            return torch.from_numpy(np.array(out, dtype=np_dtype))
        return torch.scalar_tensor(out, dtype=dtype)

    def epoch(data: Batch, order: torch.Tensor | None, size: int, count: int) -> torch.Tensor:
        """The epoch's first ``count`` batches of ``size`` (``order``'s, or the data's own
        order), as the loop would feed them to ``step``, trained in one call: the same batches,
        without the torch ops that a step's batch and loss cost. The learning rate holds for
        the epoch: a schedule that changes it between steps wraps ``step`` instead."""
        x, y = data[0].numpy(), data[1].numpy()
        if flatten:
            x = x.reshape(len(x), -1)
        idx = order.numpy() if order is not None else None
        # as steps.batches: small data is gathered once an epoch, each batch is then a view
        small = x.nbytes + y.nbytes <= EPOCH_GATHER_BYTES
        out = np.empty((count, 2) if clipping else count, dtype=np_dtype)
        with np.errstate(all="ignore"):
            if augmented is not None and plain_sgd():
                augmented.epoch(x, y, idx, size, out, group["lr"], limits, gather=small)
                return torch.from_numpy(out)
            if idx is not None and small:
                x, y, idx = x.take(idx, axis=0), y.take(idx, axis=0), None
            for i in range(count):
                rows = slice(i * size, (i + 1) * size)
                if idx is None:
                    out[i] = train(x[rows], y[rows])
                else:
                    out[i] = train(x.take(idx[rows], axis=0), y.take(idx[rows], axis=0))
        return torch.from_numpy(out)

    step.epoch = epoch  # type: ignore[attr-defined]  # the loop's whole-epoch call
    return step
