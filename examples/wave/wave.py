"""The smallest complete dlrun task: a small MLP fits y = sin(x) on [-3, 3].

Run it from this directory with `dlrun task=./wave.py`; its settings are wave.yaml, beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from dlrun.tasks import Task, TaskConfig, check


@dataclass
class WaveConfig(TaskConfig):
    name: ClassVar[str] = "wave"  # the task's name: task=wave in the recorded overrides
    hidden: int = 16  # width of the hidden layer
    points: int = 64  # training points on [-3, 3]

    def __post_init__(self) -> None:  # refused at compose time, in one line
        check(self.hidden >= 1, "task.hidden", "an integer >= 1", self.hidden)
        check(self.points >= 2, "task.points", "an integer >= 2", self.points)


class Wave(Task):
    objective = "mse"  # the key of evaluate() that sweeps and dlrun-report rank by
    maximize = False
    criterion = "half_mse"  # the loss: MSE/2 of (inputs, targets) batches of train_data

    def __init__(self, cfg: WaveConfig, data: object, device: torch.device) -> None:
        super().__init__(cfg, data, device)
        x = torch.linspace(-3, 3, cfg.points, device=device)[:, None]
        self.train_data = (x, torch.sin(x))  # on the device; the loop slices batches from it
        between = (x[:-1] + x[1:]) / 2  # held out: the model never trains on these points
        self.val_data = (between, torch.sin(between))

    def build_model(self) -> nn.Module:
        h = self.cfg.hidden
        return nn.Sequential(nn.Linear(1, h), nn.Tanh(), nn.Linear(h, 1))

    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor]:
        x, y = self.val_data
        mse = torch.mean((model(x) - y) ** 2)
        return {"loss": mse / 2, "mse": mse}
