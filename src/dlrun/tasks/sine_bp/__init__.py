"""Back-propagation on a sine (tutorial 000): a [1, H, 1] sigmoid net fits y = A sin(2 pi x) by
full-batch gradient descent. The model and data are in `task.py` (torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlrun.config.schema import ImplTaskConfig
from dlrun.errors import check


@dataclass
class SineBPConfig(ImplTaskConfig):
    name: ClassVar[str] = "sine-bp"
    hidden: int = 25
    amplitude: float = 20.0
    points: int = 100  # x = 0, 1/points, ..., (points-1)/points
    init: str = "uniform"  # uniform: weights U[0,1), zero biases (the tutorial); torch: nn.Linear's

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.hidden >= 1, "task.hidden", "an integer >= 1", self.hidden)
        check(self.points >= 2, "task.points", "an integer >= 2", self.points)
        check(self.init in ("uniform", "torch"), "task.init", "one of uniform, torch", self.init)


CONFIG = SineBPConfig
TASK = "dlrun.tasks.sine_bp.task:SineBP"  # imported only when the task runs (torch)
