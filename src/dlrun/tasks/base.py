"""The interface between a task and the shared loop.

A task owns its data (as tensors on the device), builds its model, and says how to score it.
It knows nothing about logging, files or the optimizer: the loop and the run do that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from dlrun.scratch.layers import from_torch
from dlrun.scratch.losses import half_mse, hand_loss, softmax_cross_entropy

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from torch import nn

    from dlrun.config.schema import DataConfig, TaskConfig


class Task(ABC):
    """One learning problem: its data, its model and how to score it (docs/extending.md).

    A subclass sets ``objective`` (a key of what ``evaluate()`` returns, which sweeps,
    ``best.pt`` and dlrun-report rank by) and ``maximize``, and ``criterion`` (a shared loss:
    ``"half_mse"`` or ``"cross_entropy"``) or its own ``loss()``. Its ``__init__(cfg, data,
    device)`` puts ``train_data`` on the device, a tuple of tensors with the same first
    dimension whose rows the loop batches as ``(inputs, targets, ...)``, and keeps held-out data
    for ``evaluate()``: the loop trains on ``train_data`` only, and what ``evaluate()`` scores
    is the task's choice. ``cfg`` is the task's config (``task.*``), ``data`` the run's
    ``data.*`` settings (a ``DataConfig``: ``data.root`` and the task's own ``DATA`` fields).

    The seed: the run seeds Python's, NumPy's and torch's global generators with ``seed=`` just
    before ``__init__``; ``build_model()`` draws the weights from them next. A generator of the
    task's own is seeded with ``torch.initial_seed()``.

    Shapes are checked on the first batch before training: ``half_mse`` wants an output of the
    targets' shape ((N, 1) for (N, 1) targets, not (N,)); ``cross_entropy`` (N, classes) for N
    integer labels in 0 .. classes - 1. A task with its own ``loss()`` sets ``contract`` to the
    criterion whose shapes its loss shares, and is checked the same way.

    Optional, each with a default: ``converged(model)`` (True ends training after this epoch),
    ``report(model)`` (text shown once at the end), ``figures(model, history)`` (matplotlib
    figures by file stem, saved under plots/), ``uses_optimizer = False`` (``loss()`` updates
    the model itself), ``batched = False`` (one batch of all the data an epoch) and
    ``loss_sums`` (a loss summed over points, not a mean: what the train and the val loss sum
    over, so that the curves label their two scales).

    A task never logs, prints or writes files; an exception raised in its code ends the run
    ``failed`` with a line naming its file and line, and the run log holds the traceback.
    """

    objective: ClassVar[str]  # the key of evaluate()'s result that sweeps optimise
    maximize: ClassVar[bool]
    uses_optimizer: ClassVar[bool] = True  # False: loss() updates the model itself (no autograd)
    batched: ClassVar[bool] = True  # False: every epoch is one batch of all the data
    # the loss, when it is one of the shared criteria of (inputs, targets) batches (CRITERIA):
    # loss() is then that criterion, and the fast path may run it as a fused MLP step
    criterion: ClassVar[str | None] = None
    # the shapes loss() expects of the model's output for (inputs, targets, ...) batches, by a
    # criterion's name: checked on the first batch before training (CONTRACTS). None: the
    # criterion's; a task with its own loss() and no contract is not checked
    contract: ClassVar[str | None] = None
    # a loss summed over its points (not a mean): what the train and the val loss sum over, for
    # the curves' labels, e.g. ("50 training points", "50 grid points"); None: a mean, one scale
    loss_sums: tuple[str, str] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A task without a loss fails where it is written, not at its first training step."""
        super().__init_subclass__(**kwargs)
        if cls.criterion is None and cls.loss is Task.loss:
            raise TypeError(
                f"{cls.__name__}: set criterion (one of {', '.join(CRITERIA)}) or define loss()"
            )
        for kind in ("criterion", "contract"):
            value = getattr(cls, kind)
            if value is not None and value not in CRITERIA:
                raise TypeError(
                    f"{cls.__name__}: {kind} {value!r} is not one of {', '.join(CRITERIA)}"
                )

    def __init__(self, cfg: TaskConfig, data: DataConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.data = data
        self.device = device
        self.train_data: tuple[torch.Tensor, ...] = ()  # same first dim; batches index into it
        # task.impl=scratch: the hand-written implementation (dlrun.scratch)
        self.impl: str = getattr(cfg, "impl", "torch")
        # True: loss() fills every parameter's .grad by hand, the loop calls no backward()
        self.hand_gradients = self.impl == "scratch" and self.uses_optimizer

    @property
    def name(self) -> str:
        """The task's name, written once: its config's."""
        return self.cfg.name

    def for_impl(self, model: nn.Module) -> nn.Module:
        """The model itself, or under impl=scratch its hand-written twin with the same weights."""
        if self.impl != "scratch":
            return model
        return from_torch(model)

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh model, initialised from torch's global RNG (seeded by the run)."""

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean loss of one batch, a 0-dim tensor (no .item(): the loop reads it once per epoch).
        With hand_gradients it also fills each parameter's .grad (no autograd)."""
        return CRITERIA[self.criterion](model, batch, by_hand=self.hand_gradients)

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor | float]:
        """Validation metrics, including "loss" and the objective (called under no_grad)."""

    def converged(self, model: nn.Module) -> bool:
        """True to stop training early (e.g. k-means centres stopped moving)."""
        return False

    def report(self, model: nn.Module) -> str | None:
        """Text worth showing once at the end of a run."""
        return None

    def figures(self, model: nn.Module, history: list[dict[str, Any]]) -> dict[str, Figure]:
        """Task-specific plots, by file stem; the run saves them under plots/."""
        return {}


def classification_loss(
    model: nn.Module, batch: tuple[torch.Tensor, ...], by_hand: bool = False
) -> torch.Tensor:
    """Mean cross-entropy of a (inputs, labels) batch (by_hand: gradients filled by hand)."""
    import torch.nn.functional as F

    if by_hand:
        return hand_loss(model, batch, softmax_cross_entropy)
    x, y = batch
    return F.cross_entropy(model(x), y)


def half_mse_loss(
    model: nn.Module, batch: tuple[torch.Tensor, ...], by_hand: bool = False
) -> torch.Tensor:
    """Mean squared error / 2 of a (inputs, targets) batch (by_hand: gradients filled by hand)."""
    import torch

    if by_hand:
        return hand_loss(model, batch, half_mse)
    x, y = batch
    return 0.5 * torch.mean((model(x) - y) ** 2)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """loss, accuracy and the count of correct answers, all still on the device."""
    import torch.nn.functional as F

    correct = (logits.argmax(1) == labels).sum()
    return {
        "loss": F.cross_entropy(logits, labels),
        "accuracy": correct / len(labels),
        "correct": correct,
    }


# the shared losses, by the name a task gives as its `criterion`
CRITERIA = {"cross_entropy": classification_loss, "half_mse": half_mse_loss}


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def half_mse_contract(output: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> str | None:
    """An output of the targets' own shape: (N,) against (N, 1) would broadcast to (N, N)."""
    target = batch[1]
    if output.shape == target.shape:
        return None
    return f"half_mse expects the output to have the targets' shape {_shape(target)}"


def cross_entropy_contract(output: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> str | None:
    """(N, classes) scores for N integer labels in [0, classes) (or class probabilities of the
    output's own shape)."""
    target = batch[1]
    if target.is_floating_point():
        if output.shape == target.shape:
            return None
        return f"cross_entropy expects class probabilities of the output's shape {_shape(output)}"
    if (
        output.ndim < 2
        or output.shape[0] != target.shape[0]
        or output.shape[2:] != target.shape[1:]
    ):
        return (
            f"cross_entropy expects an output of shape (N, classes) for {target.shape[0]} "
            f"labels of shape {_shape(target)}"
        )
    low, high = (int(v) for v in (target.min(), target.max()))  # once, before training
    if low < 0 or high >= output.shape[1]:
        return (
            f"cross_entropy expects labels from 0 to {output.shape[1] - 1} for the output's "
            f"{output.shape[1]} classes; the first batch has labels from {low} to {high}"
        )
    return None


# what each shared criterion expects of the model's output for a batch (a task's `contract`)
CONTRACTS = {"cross_entropy": cross_entropy_contract, "half_mse": half_mse_contract}
