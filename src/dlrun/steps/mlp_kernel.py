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
autograd step. ``tests/test_steps_mlp_kernel.py`` holds the kernel to autograd and torch.optim
(the sums run in NumPy's BLAS, so the two agree to rounding, not bit for bit).
``trainer.mlp_kernel=false`` turns it off.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dlrun import compat
from dlrun.steps.batches import Batch, Step
from dlrun.steps.clip import EPS
from dlrun.steps.fused import Update, fused_kind

if TYPE_CHECKING:
    from dlrun.schema import TrainerConfig
    from dlrun.tasks.base import Task

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


# --------------------------------------------------------------------------- the step's maths


def gradients(
    params: list[np.ndarray],
    acts: list[str | None],
    criterion: str,
    x: np.ndarray,
    y: np.ndarray,
    scale: float = 1.0,
) -> tuple[float, list[np.ndarray]]:
    """The batch's mean loss and the gradients of params (W0, b0, W1, b1, ...), times scale.

    Written for few, small ops, since each NumPy call costs microseconds whatever its size:
    activations are (features, batch), so that the softmax's sums over a few classes run along
    the long axis; in place where it can be; ReLU keeps its mask for the backward pass; bias
    gradients are products with a ones vector; and scale (plain SGD's -lr) multiplies the loss's
    gradient once instead of every parameter's.
    """
    inputs: list[np.ndarray] = []  # each layer's input; then the last layer's output
    masks: list[np.ndarray | None] = []
    h = x.T
    for i, act in enumerate(acts):
        inputs.append(h)
        h = params[2 * i] @ h
        h += params[2 * i + 1][:, None]
        mask = None
        if act == "relu":
            mask = h > 0
            h *= mask
        elif act == "tanh":
            np.tanh(h, out=h)
        elif act == "sigmoid":  # 1 / (1 + exp(-h))
            np.negative(h, out=h)
            np.exp(h, out=h)
            h += 1
            np.reciprocal(h, out=h)
        masks.append(mask)
    inputs.append(h.copy() if acts[-1] in ("tanh", "sigmoid") else h)  # the loss works in place
    n = h.shape[1]
    rows, ones = _indices(n, h.dtype)
    if criterion == "cross_entropy":  # softmax over the classes, then (p - onehot(y)) / n
        h -= np.maximum.reduce(h, axis=0)
        picked = h[y, rows]
        np.exp(h, out=h)
        total = np.add.reduce(h, axis=0)
        loss = float(np.add.reduce(np.log(total) - picked)) / n
        h /= total
        h[y, rows] -= 1
        h *= scale / n
        g = h
    else:  # 0.5 * mean((h - y) ** 2): its gradient is (h - y) / size
        g = h - y.T
        loss = 0.5 * float(np.vdot(g, g)) / g.size
        g *= scale / g.size
    grads: list[np.ndarray] = [g] * (2 * len(acts))
    for i in range(len(acts) - 1, -1, -1):
        act, mask = acts[i], masks[i]
        if mask is not None:
            g *= mask
        elif act == "tanh":  # through the activation, from its output
            g *= 1 - inputs[i + 1] * inputs[i + 1]
        elif act == "sigmoid":
            g *= inputs[i + 1] * (1 - inputs[i + 1])
        grads[2 * i] = g @ inputs[i].T
        grads[2 * i + 1] = g @ ones
        if i > 0:
            g = params[2 * i].T @ g
    return loss, grads


_cached: dict[tuple[int, np.dtype], tuple[np.ndarray, np.ndarray]] = {}


def _indices(n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """0..n-1 and n ones, made once per batch size."""
    key = (n, dtype)
    if key not in _cached:
        _cached[key] = (np.arange(n), np.ones(n, dtype=dtype))
    return _cached[key]


def clip(
    grads: list[np.ndarray], scale: float, max_norm: float | None, value: float | None
) -> float:
    """``trainer.grad_clip`` on the kernel's gradients (times ``scale``, e.g. SGD's -lr), in
    NumPy as clip_grad_norm_ / clip_grad_value_ do it in torch: no torch op per step. Returns
    the total 2-norm before clipping (of the gradients themselves, not times scale)."""
    size = abs(scale)
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads)) / size
    if max_norm is not None:
        coef = min(max_norm / (norm + EPS), 1.0)
        if coef < 1.0:
            for g in grads:
                g *= coef
    if value is not None:
        bound = value * size
        for g in grads:
            np.clip(g, -bound, bound, out=g)
    return norm


# --------------------------------------------------------------------------- building a step


def why_not(task: Task, model: nn.Module, trainer: TrainerConfig) -> str | None:
    """Why this run cannot use the kernel (None: it can), before looking at the optimizer."""
    if not trainer.mlp_kernel or not trainer.fast:
        return "turned off"
    if task.device.type != "cpu":
        return f"device {task.device.type} (the kernel is for the CPU)"
    if trainer.compile or trainer.precision != "fp32" or trainer.detect_anomaly:
        return "trainer.compile, trainer.precision or trainer.detect_anomaly is set"
    from dlrun.tasks.base import Task

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

    def step(batch: Batch) -> torch.Tensor:
        x, y = batch
        xs = x.numpy()
        if flatten:
            xs = xs.reshape(len(xs), -1)
        norm = 0.0
        with np.errstate(all="ignore"):  # a diverging run's NaN is the loop's to report
            lr = group["lr"]  # read at every step: a schedule changes it between steps
            if sgd and group["momentum"] == 0 and group["weight_decay"] == 0 and lr > 0:
                loss, grads = gradients(arrays, acts, criterion, xs, y.numpy(), -lr)
                if clipping:
                    norm = clip(grads, -lr, max_norm, value)
                for p, g in zip(arrays, grads, strict=True):
                    p += g  # p - lr * grad
            else:
                loss, grads = gradients(arrays, acts, criterion, xs, y.numpy())
                if clipping:
                    norm = clip(grads, 1.0, max_norm, value)
                with torch.no_grad():
                    update(params, [torch.from_numpy(g) for g in grads])
        if clipping:  # from a NumPy pair: cheaper than a torch op on Python numbers
            return torch.from_numpy(np.array((loss, norm), dtype=np_dtype))
        return torch.scalar_tensor(loss, dtype=dtype)

    return step
