"""The `digits` task: an MLP classifies scikit-learn's bundled 8x8 handwritten digits.

This module is what dlrun imports to list and validate the task (`dlrun --help`, config errors),
so it holds only the config and names the Task class by its path: torch is imported only when
the task runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlrun.tasks import ImplTaskConfig, check


@dataclass
class DigitsConfig(ImplTaskConfig):
    name: ClassVar[str] = "digits"  # the task's name: `dlrun task=digits`
    hidden: int = 128  # 64-hidden-10 MLP with ReLU
    test_fraction: float = 0.25  # held out for validation; the split is seeded by `seed`

    def __post_init__(self) -> None:
        super().__post_init__()  # task.impl: torch or scratch (hand-written)
        check(self.hidden >= 1, "task.hidden", "an integer >= 1", self.hidden)
        check(
            0 < self.test_fraction < 1,
            "task.test_fraction",
            "a number in (0, 1)",
            self.test_fraction,
        )


TASK = "dlrun_digits.task:Digits"
