"""The interface between a task and the shared loop.

A task owns its data (as tensors on the device), builds its model, and says how to score it.
It knows nothing about logging, files or the optimizer: the loop and the run do that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from torch import nn

    from dlrun.schema import DataConfig, TaskConfig


class Task(ABC):
    objective: ClassVar[str]  # the key of evaluate()'s result that sweeps optimise
    maximize: ClassVar[bool]
    uses_optimizer: ClassVar[bool] = True  # False: loss() updates the model itself (no autograd)
    batched: ClassVar[bool] = True  # False: every epoch is one batch of all the data
    # the loss, when it is one of the shared criteria of (inputs, targets) batches (CRITERIA):
    # loss() is then that criterion, and the fast path may run it as a fused MLP step
    criterion: ClassVar[str | None] = None
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
        if cls.criterion is not None and cls.criterion not in CRITERIA:
            raise TypeError(
                f"{cls.__name__}: criterion {cls.criterion!r} is not one of {', '.join(CRITERIA)}"
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
        from dlrun.scratch.layers import from_torch

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
        from dlrun.scratch.losses import hand_loss, softmax_cross_entropy

        return hand_loss(model, batch, softmax_cross_entropy)
    x, y = batch
    return F.cross_entropy(model(x), y)


def half_mse_loss(
    model: nn.Module, batch: tuple[torch.Tensor, ...], by_hand: bool = False
) -> torch.Tensor:
    """Mean squared error / 2 of a (inputs, targets) batch (by_hand: gradients filled by hand)."""
    import torch

    if by_hand:
        from dlrun.scratch.losses import half_mse, hand_loss

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
