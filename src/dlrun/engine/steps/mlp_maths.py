"""The MLP kernel's arithmetic: forward, loss and backward of a Linear/activation stack in NumPy.

Written for few, small ops, since each NumPy call costs about a microsecond whatever its size:
activations are (features, batch), so that the softmax's sums over a few classes run along the
long axis; work is in place where it can be; ReLU keeps its mask for the backward pass; and
scale (plain SGD's -lr) multiplies the loss's gradient once instead of every parameter's. Masks
and factors stay in the activations' dtype and shapes match where they can: NumPy's same-shape,
same-dtype loops skip its casting and broadcasting machinery, which costs more than the
arithmetic at these sizes.

Two drivers share the activation and loss pieces:

- :func:`gradients`: one batch on the parameters as torch holds them (W and b apart), for the
  optimizer's fused update;
- :class:`AugmentedSGD`: plain SGD over an epoch's batches on ``[W | b]`` copies of the weights
  and inputs with a row of ones under them, so that each layer's bias is added, and its gradient
  summed, inside the layer's one BLAS product; the broadcast bias add and the bias gradient's
  product (a third of a small step's time) are gone, and the weights are copied in and out once
  an epoch.

``tests/engine/test_steps_mlp_kernel.py`` holds both to autograd and torch.optim (the sums run in
NumPy's BLAS, so they agree to rounding, not bit for bit).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dlrun.engine.steps.clip import EPS

ACTIVATED = ("tanh", "sigmoid")  # activations whose derivative is read from their output


def activate(h: np.ndarray, act: str | None, mask: np.ndarray | None = None) -> np.ndarray | None:
    """``act`` on h in place; ReLU returns its mask (into ``mask`` when given)."""
    if act == "relu":  # a mask of h's own dtype: multiplying by a bool array casts, 3x slower
        mask = np.greater(h, 0, out=mask if mask is not None else np.empty_like(h))
        h *= mask
        return mask
    if act == "tanh":
        np.tanh(h, out=h)
    elif act == "sigmoid":  # 1 / (1 + exp(-h))
        np.negative(h, out=h)
        np.exp(h, out=h)
        h += 1
        np.reciprocal(h, out=h)
    return None


def through(g: np.ndarray, act: str | None, out: np.ndarray, mask: np.ndarray | None) -> None:
    """g times the activation's derivative, in place: ReLU's mask, or from its output ``out``."""
    if mask is not None:
        g *= mask
    elif act == "tanh":
        g *= 1 - out * out
    elif act == "sigmoid":
        g *= out * (1 - out)


def loss_gradient(
    h: np.ndarray,
    criterion: str,
    y: np.ndarray,
    scale: float,
    picked_at: np.ndarray | None = None,
    parts: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, np.ndarray]:
    """The batch's mean loss on outputs h (outputs, batch), and its gradient times ``scale``
    (cross-entropy: in h's own memory; h must be contiguous).

    Cross-entropy only: ``picked_at``, each row's ``y * n + row`` (made once an epoch); with
    ``parts`` (n each) the loss is not computed (nan): its pieces, the picked logit and the
    softmax's sum (both less the row's largest logit), go there for one sum an epoch."""
    n = h.shape[1]
    if criterion == "cross_entropy":  # softmax over the classes, then (p - onehot(y)) / n
        # each sample's true class as a flat index into h: one take and one update, cheaper
        # than indexing with (y, rows) twice
        if picked_at is None:
            picked_at = y * n
            picked_at += _rows(n)
        flat = h.reshape(-1)  # a view: h is contiguous
        h -= np.maximum.reduce(h, axis=0)
        if parts is None:
            picked = flat.take(picked_at)
            np.exp(h, out=h)
            total = np.add.reduce(h, axis=0)
            loss = float(np.add.reduce(np.log(total) - picked)) / n
        else:
            picked, total = parts
            flat.take(picked_at, out=picked)
            np.exp(h, out=h)
            np.add.reduce(h, axis=0, out=total)
            loss = math.nan
        h *= (scale / n) / total  # p * scale / n in one product
        flat[picked_at] -= scale / n
        return loss, h
    # 0.5 * mean((h - y) ** 2): its gradient is (h - y) / size
    g = h - y.T
    loss = 0.5 * float(np.vdot(g, g)) / g.size
    g *= scale / g.size
    return loss, g


@functools.cache
def _rows(n: int) -> np.ndarray:
    """0..n-1, made once per batch size (never written)."""
    return np.arange(n)


@functools.cache
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    return np.ones(n, dtype=dtype)


def gradients(
    params: list[np.ndarray],
    acts: list[str | None],
    criterion: str,
    x: np.ndarray,
    y: np.ndarray,
    scale: float = 1.0,
) -> tuple[float, list[np.ndarray]]:
    """The batch's mean loss and the gradients of params (W0, b0, W1, b1, ...), times scale;
    bias gradients are products with a ones vector."""
    inputs: list[np.ndarray] = []  # each layer's input; then the last layer's output
    masks: list[np.ndarray | None] = []
    h = x.T
    for i, act in enumerate(acts):
        inputs.append(h)
        h = params[2 * i] @ h
        h += params[2 * i + 1][:, None]
        masks.append(activate(h, act))
    inputs.append(h.copy() if acts[-1] in ACTIVATED else h)  # the loss works in place
    loss, g = loss_gradient(h, criterion, y, scale)
    ones = _ones(g.shape[1], g.dtype)
    grads: list[np.ndarray] = [g] * (2 * len(acts))
    for i in range(len(acts) - 1, -1, -1):
        through(g, acts[i], inputs[i + 1], masks[i])
        grads[2 * i] = g @ inputs[i].T
        grads[2 * i + 1] = g @ ones
        if i > 0:
            g = params[2 * i].T @ g
    return loss, grads


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


class AugmentedSGD:
    """Plain SGD (``p -= lr * grad``) over whole epochs on ``[W | b]`` copies of ``params`` (W0,
    b0, W1, b1, ...: the live arrays, copied in before an epoch and back after it)."""

    def __init__(self, params: list[np.ndarray], acts: list[str | None], criterion: str) -> None:
        self.params, self.acts, self.criterion = params, acts, criterion
        self.dtype = params[0].dtype
        self.weights = [  # (outputs, inputs + 1)
            np.empty((w.shape[0], w.shape[1] + 1), dtype=self.dtype) for w in params[0::2]
        ]
        self._layers: dict[int, list[tuple]] = {}
        self._held: dict[tuple[str, int], np.ndarray] = {}

    def epoch(
        self,
        x: np.ndarray,
        y: np.ndarray,
        idx: np.ndarray | None,
        size: int,
        out: np.ndarray,
        lr: float,
        limits: tuple[float | None, float | None] | None,
        gather: bool = True,
    ) -> None:
        """Train on the first ``len(out)`` batches of ``size`` rows of (x, y) (in the order
        ``idx``, else as they are); ``out[i]``: batch i's loss (with ``limits`` = (max_norm,
        value) of trainer.grad_clip, [loss, gradient norm before clipping]).

        ``gather``: the epoch's inputs are gathered and transposed once, each batch is then a
        view; else batch by batch (big data: see steps.batches)."""
        count = len(out)
        rows = min(count * size, len(idx) if idx is not None else len(x))
        ys = y[:rows] if idx is None else y.take(idx[:rows], axis=0)
        whole = None
        if gather:
            whole = self._inputs(("epoch", rows))
            whole[:-1] = (x[:rows] if idx is None else x.take(idx[:rows], axis=0)).T
        cross_entropy = self.criterion == "cross_entropy"
        losses = out[:, 0] if limits is not None else out
        starts, sizes, across, within = _batch_layout(rows, size)
        if cross_entropy:  # each row's flat index into its batch's outputs, for the whole epoch
            picked_at = ys * across
            picked_at += within
            picked, total = np.empty(rows, dtype=self.dtype), np.empty(rows, dtype=self.dtype)
        pairs = list(zip(self.weights, self.params[0::2], self.params[1::2], strict=True))
        for w, weight, bias in pairs:
            w[:, :-1] = weight
            w[:, -1] = bias
        try:
            for b in range(count):
                at = slice(b * size, min((b + 1) * size, rows))
                n = at.stop - at.start
                layers = self._work(n)
                if whole is not None:
                    inputs = whole[:, at]
                else:
                    inputs = self._inputs(("batch", n))
                    inputs[:-1] = (x[at] if idx is None else x.take(idx[at], axis=0)).T
                if cross_entropy:
                    parts = (picked_at[at], (picked[at], total[at]))
                    norm = self._step(inputs, layers, ys[at], lr, limits, parts)
                else:
                    losses[b], norm = self._step(inputs, layers, ys[at], lr, limits)
                if limits is not None:
                    out[b, 1] = norm
        finally:  # the weights reached, also when a second Ctrl-C stops the epoch
            for w, weight, bias in pairs:
                weight[...] = w[:, :-1]
                bias[...] = w[:, -1]
        if cross_entropy:  # the batches' mean losses at once: log(sum(exp)) - picked, per batch
            terms = np.log(total)
            terms -= picked
            np.divide(np.add.reduceat(terms, starts), sizes, out=losses)

    def _inputs(self, key: tuple[str, int]) -> np.ndarray:
        """A (features + 1, n) buffer whose last row is ones, made once per (use, n)."""
        if key not in self._held:
            self._held[key] = np.ones((self.weights[0].shape[1], key[1]), dtype=self.dtype)
        return self._held[key]

    def _work(self, n: int) -> list[tuple]:
        """For batches of n rows, per layer: its weights, the weights that multiply its
        output's gradient back to its inputs, its output, the buffer holding that output (over
        a row of ones but for the last layer: the next layer's inputs), ReLU's mask, and the
        activation, the buffer of its inputs' gradient and those inputs (but the first
        layer's), and its weights' gradient; made once."""
        if n not in self._layers:
            layers = []
            for i, (w, act) in enumerate(zip(self.weights, self.acts, strict=True)):
                last = i == len(self.weights) - 1
                held = np.ones((w.shape[0] + (0 if last else 1), n), dtype=self.dtype)
                mask = np.empty((w.shape[0], n), dtype=self.dtype) if act == "relu" else None
                back = np.empty((w.shape[1] - 1, n), dtype=self.dtype) if i else None
                under = layers[-1][3] if i else None  # the layer's inputs (the first's vary)
                grad = np.empty_like(w)
                layers.append(
                    (w, w[:, :-1].T, held[: w.shape[0]], held, mask, act, back, under, grad)
                )
            self._layers[n] = layers
        return self._layers[n]

    def _step(
        self,
        inputs: np.ndarray,
        layers: list[tuple],
        y: np.ndarray,
        lr: float,
        limits: tuple[float | None, float | None] | None,
        parts: tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        """One update; returns the gradient norm (with ``parts``, where the cross-entropy's
        pieces go), else (loss, norm). Written out for few Python operations per layer: at
        FizzBuzz's sizes they cost as much as the arithmetic."""
        below = inputs
        for w, _, z, held, mask, act, *_ in layers:
            np.matmul(w, below, out=z)
            if mask is not None:  # ReLU, as activate() does it
                np.greater(z, 0, out=mask)
                z *= mask
            elif act is not None:
                activate(z, act)
            below = held
        last = len(layers) - 1
        end = below.copy() if layers[last][5] in ACTIVATED else below  # the loss works in place
        if parts is not None:
            loss, g = loss_gradient(below, self.criterion, y, -lr, parts[0], parts[1])
        else:
            loss, g = loss_gradient(below, self.criterion, y, -lr)
        grads = []
        for i in range(last, -1, -1):
            w, w_in, z, _, mask, act, back, under, grad = layers[i]
            if mask is not None:
                g *= mask
            elif act is not None:
                through(g, act, end if i == last else z, None)
            # the weights' and the bias's gradient in one product, from the inputs over their
            # row of ones
            np.matmul(g, (inputs if under is None else under).T, out=grad)
            if i > 0:
                g = np.matmul(w_in, g, out=back)
            if limits is None:
                w += grad  # w - lr * gradient (w's part in g's way back is done)
            else:
                grads.append(grad)
        if limits is None:
            return 0.0 if parts is not None else (loss, 0.0)
        norm = clip(grads, -lr, *limits)
        for (w, *_), grad in zip(reversed(layers), grads, strict=True):
            w += grad
        return norm if parts is not None else (loss, norm)


@functools.cache
def _batch_layout(rows: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An epoch of ``rows`` rows in batches of ``size``: each batch's first row and size, then
    each row's batch size and place in its batch (never written)."""
    starts = np.arange(0, rows, size)
    place = np.arange(rows)
    return (
        starts,
        np.minimum(size, rows - starts),
        np.minimum(size, rows - place // size * size),
        place % size,
    )
