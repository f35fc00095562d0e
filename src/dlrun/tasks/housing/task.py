"""Linear regression on California housing (a numpy tutorial): nn.Linear(8, 1) fitted by
minibatch SGD on MSE/2, scored by the mean squared error on a held-out 20%.

The data is scikit-learn's California housing (20640 x 8, fetched into and read from
``data.root``), or ``data.path``: a CSV with the 8 feature columns and ``MedHouseVal``.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlrun import plots
from dlrun.errors import DlrunError
from dlrun.tasks.base import Task
from dlrun.tasks.housing import HousingDataConfig, HousingRegressionConfig
from dlrun.tasks.numeric_cells import check_size, number, squared_limit

FEATURES = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
TARGET = "MedHouseVal"


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, 8) and target (n,) from a CSV with a header naming FEATURES and TARGET."""
    where = f"data.path={path}"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            header = [h.strip() for h in next(rows, [])]
            missing = [c for c in (*FEATURES, TARGET) if c not in header]
            if missing:
                raise DlrunError(
                    f"{where}: missing column(s) {', '.join(missing)}; expected a header with "
                    f"{', '.join(FEATURES)} and {TARGET}"
                )
            columns = [header.index(c) for c in (*FEATURES, TARGET)]
            names = (*FEATURES, TARGET)
            values, lines = [], []
            for line, row in enumerate(rows, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DlrunError(
                        f"{where}: line {line} has {len(row)} fields, the header has {len(header)}"
                    )
                parsed = [
                    number(row[c], where, line, name)
                    for name, c in zip(names, columns, strict=True)
                ]
                values.append(parsed)
                lines.append(line)
    except FileNotFoundError:
        raise DlrunError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise DlrunError(f"{where}: is a directory, expected a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DlrunError(f"{where}: cannot be read as CSV ({str(exc).splitlines()[0]})") from None
    if len(values) < 2:
        raise DlrunError(f"{where}: has {len(values)} data rows, expected at least 2")
    table = np.asarray(values, dtype=np.float64)
    # the loss sums the squares of the target (and of the features, unstandardised)
    check_size(table, where, squared_limit(table.size), lines, names)
    return table[:, :-1], table[:, -1]


def fetch(data: HousingDataConfig) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's copy under data.root, downloaded there first when missing and allowed."""
    root = Path(data.root).expanduser()
    existed = root.exists()
    hint = (
        f"California housing: no usable copy in {root.resolve()} (scikit-learn's cache, data.root)"
    )
    csv_hint = f"data.path=<csv> with columns {','.join(FEATURES)},{TARGET}"
    try:
        from sklearn.datasets import fetch_california_housing

        with warnings.catch_warnings():  # its "retry downloading" warnings: one line is enough
            warnings.simplefilter("ignore")
            bunch = fetch_california_housing(data_home=str(root), download_if_missing=data.download)
    except Exception as exc:  # URLError, OSError, a corrupt cache: all mean "no data here"
        if not existed and root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # scikit-learn made the directory; leave no empty trace
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        cause = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        cached = sorted(root.glob("cal_housing*.pkz")) if root.is_dir() else []
        if cached:
            raise DlrunError(
                f"California housing: {cached[0].resolve()} could not be read ({cause}); delete "
                f"it to download it again, or pass {csv_hint}"
            ) from None
        if not data.download:
            raise DlrunError(
                f"{hint} and data.download=false; allow the download (data.download=true) or "
                f"pass {csv_hint}"
            ) from None
        raise DlrunError(
            f"{hint} and the download failed ({cause}); run once with internet access to "
            f"download it there, or pass {csv_hint}"
        ) from None
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.float64)


class HousingRegression(Task):
    objective = "mse"
    maximize = False
    criterion = "half_mse"  # MSE/2, the tutorial's loss: its gradient is (prediction - y) / n

    cfg: HousingRegressionConfig
    data: HousingDataConfig

    def __init__(
        self, cfg: HousingRegressionConfig, data: HousingDataConfig, device: torch.device
    ) -> None:
        super().__init__(cfg, data, device)
        x, y = read_csv(Path(data.path).expanduser()) if data.path else fetch(data)
        n = len(y)
        n_test = round(n * data.test_fraction)
        if not 1 <= n_test < n:
            raise DlrunError(
                f"data.test_fraction={data.test_fraction}: leaves {n_test} of {n} rows for the "
                "test split; expected at least one row in each split"
            )
        order = np.random.permutation(n)  # numpy's global RNG, seeded by the run
        test, train = order[:n_test], order[n_test:]
        self.mean = x[train].mean(axis=0)
        self.scale = x[train].std(axis=0)
        self.scale[self.scale == 0] = 1.0  # a constant column stays 0 instead of NaN
        if not cfg.standardize:
            self.mean, self.scale = np.zeros(x.shape[1]), np.ones(x.shape[1])

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=device)

        x = (x - self.mean) / self.scale
        self.x_train, self.y_train = tensor(x[train]), tensor(y[train, None])
        self.x_test, self.y_test = tensor(x[test]), tensor(y[test, None])
        self.train_data = (self.x_train, self.y_train)

    def build_model(self) -> nn.Module:
        return self.for_impl(nn.Linear(len(FEATURES), 1))

    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor | float]:
        residual = model(self.x_test) - self.y_test
        mse = torch.mean(residual**2)
        r2 = 1 - mse / torch.mean((self.y_test - self.y_test.mean()) ** 2)
        return {"loss": 0.5 * mse, "mse": mse, "r2": r2}

    def figures(self, model: nn.Module, history: list[dict[str, Any]]) -> dict[str, Any]:
        truth = self.y_test.squeeze(1).cpu().numpy()
        predicted = model(self.x_test).squeeze(1).cpu().numpy()
        fig, ax = plots.figure(width=5, height=5)
        ax.scatter(truth, predicted, s=4, alpha=0.4, label="test rows")
        low, high = (
            float(min(truth.min(), predicted.min())),
            float(max(truth.max(), predicted.max())),
        )
        ax.plot([low, high], [low, high], color="tab:gray", lw=1, label="predicted = true")
        mse = float(np.mean((predicted - truth) ** 2))
        ax.set(
            xlabel=f"true {TARGET}",
            ylabel=f"predicted {TARGET}",
            title=f"test split: {len(truth)} rows, mse {mse:.3g}",
        )
        ax.legend(loc="upper left")
        return {"pred_vs_true": fig}
