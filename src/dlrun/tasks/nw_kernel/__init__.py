"""Nadaraya-Watson kernel regression (tutorial 003, d2l "attention pooling"). The model and data
are in `task.py` (torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlrun.config.schema import TaskConfig
from dlrun.errors import check


@dataclass
class NWKernelConfig(TaskConfig):
    name: ClassVar[str] = "nw-kernel"
    variant: str = "parametric"  # parametric: learnable kernel width w; nonparametric: w = 1
    n_train: int = 50  # training x: sorted uniform on [0, 5)
    noise: float = 0.5  # standard deviation of the noise on the training y

    def __post_init__(self) -> None:
        check(
            self.variant in ("parametric", "nonparametric"),
            "task.variant",
            "one of parametric, nonparametric",
            self.variant,
        )
        # leave-one-out training needs at least one other point to attend to
        check(self.n_train >= 2, "task.n_train", "an integer >= 2", self.n_train)
        check(self.noise >= 0, "task.noise", "a number >= 0", self.noise)


CONFIG = NWKernelConfig
TASK = "dlrun.tasks.nw_kernel.task:NWKernelRegression"  # imported only when the task runs (torch)
