"""Linear regression on California housing (a numpy tutorial), the task `housing-regression`.
The model and data are in `task.py` (torch, scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlrun.config.schema import DataConfig, ImplTaskConfig
from dlrun.errors import check


@dataclass
class HousingRegressionConfig(ImplTaskConfig):
    name: ClassVar[str] = "housing-regression"
    # features to zero mean and unit variance with the training split's statistics (the
    # tutorial fed them raw, which diverges at its lr 0.001)
    standardize: bool = True


@dataclass
class HousingDataConfig(DataConfig):
    """housing-regression: scikit-learn's California housing, cached under <root>, or
    ``path``: a CSV with the 8 feature columns and MedHouseVal."""

    path: str | None = None  # a file of your own instead of the data set
    test_fraction: float = 0.2  # held out for validation; the split is seeded by `seed`
    download: bool = True  # let scikit-learn fetch the data set when <root> has no copy

    def __post_init__(self) -> None:
        check(
            0 < self.test_fraction < 1,
            "data.test_fraction",
            "a number in (0, 1)",
            self.test_fraction,
        )


CONFIG, DATA = HousingRegressionConfig, HousingDataConfig
TASK = "dlrun.tasks.housing.task:HousingRegression"  # imported only when the task runs (torch)
