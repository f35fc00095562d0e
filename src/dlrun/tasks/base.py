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
    name: ClassVar[str]
    objective: ClassVar[str]  # the key of evaluate()'s result that sweeps optimise
    maximize: ClassVar[bool]
    uses_optimizer: ClassVar[bool] = True  # False: loss() updates the model itself (no autograd)
    batched: ClassVar[bool] = True  # False: every epoch is one batch of all the data

    def __init__(self, cfg: TaskConfig, data: DataConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.data = data
        self.device = device
        self.train_data: tuple[torch.Tensor, ...] = ()  # same first dim; batches index into it

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh model, initialised from torch's global RNG (seeded by the run)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean loss of one batch, a 0-dim tensor (no .item(): the loop reads it once per epoch)."""

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


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean cross-entropy of a (inputs, labels) batch."""
    import torch.nn.functional as F

    x, y = batch
    return F.cross_entropy(model(x), y)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """loss, accuracy and the count of correct answers, all still on the device."""
    import torch.nn.functional as F

    correct = (logits.argmax(1) == labels).sum()
    return {
        "loss": F.cross_entropy(logits, labels),
        "accuracy": correct / len(labels),
        "correct": correct,
    }
