"""What a run trains, as one value that the loop, the train step's checkpoints and the run hand
on: where it trains, the task and its model, the optimizer, the generator that shuffles the data,
the trainer's settings and the training recipe's parts that carry a state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from dlrun.config.trainer import TrainerConfig
    from dlrun.engine.early_stopping import EarlyStopping
    from dlrun.engine.schedules import Schedule
    from dlrun.tasks.base import Task


@dataclass
class Training:
    """What one run trains, built once by :func:`dlrun.runs.setup.build`."""

    device: torch.device
    task: Task
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None  # None: the task trains by its own rule
    generator: torch.Generator  # the loop's shuffling, checkpointed
    trainer: TrainerConfig  # as the strategy runs it
    schedule: Schedule | None = None  # the scheduler group, checkpointed
    stopper: EarlyStopping | None = None  # trainer.early_stopping, checkpointed

    def recipe(self) -> dict[str, Any]:
        """The training recipe's parts with a state, by their checkpoint key."""
        return {"scheduler": self.schedule, "early_stopping": self.stopper}
