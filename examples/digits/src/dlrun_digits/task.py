"""The digits task's data, model and score (imports torch and scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from dlrun.tasks.base import Task, classification_metrics
from dlrun_digits import DigitsConfig


class Digits(Task):
    objective = "accuracy"  # what sweeps optimise, read from evaluate()
    maximize = True
    criterion = "cross_entropy"  # a shared loss: the fast path and impl=scratch come with it

    cfg: DigitsConfig

    def __init__(self, cfg: DigitsConfig, data: Any, device: torch.device) -> None:
        super().__init__(cfg, data, device)
        digits = load_digits()  # 1797 images that ship inside scikit-learn: no download
        x = torch.as_tensor(digits.data / 16.0, dtype=torch.float32, device=device)
        y = torch.as_tensor(digits.target, dtype=torch.long, device=device)
        order = torch.as_tensor(np.random.permutation(len(y)), device=device)  # seeded by the run
        n_test = round(len(y) * cfg.test_fraction)
        test, train = order[:n_test], order[n_test:]
        self.train_data = (x[train], y[train])
        self.x_test, self.y_test = x[test], y[test]

    def build_model(self) -> nn.Module:
        model = nn.Sequential(
            nn.Linear(64, self.cfg.hidden), nn.ReLU(), nn.Linear(self.cfg.hidden, 10)
        )
        return self.for_impl(model)  # impl=scratch: the hand-written twin, same weights

    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor | float]:
        return dict(classification_metrics(model(self.x_test), self.y_test))
