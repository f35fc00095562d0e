"""Back-propagation on a sine (tutorial 000): a [1, H, 1] sigmoid net fits y = A sin(2 pi x)
by full-batch gradient descent.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from dlrun import plots
from dlrun.tasks.base import Task
from dlrun.tasks.sine_bp import SineBPConfig


class SineBP(Task):
    objective = "mse"
    maximize = False
    criterion = "half_mse"  # MSE/2, the tutorial's loss: its gradient is (prediction - y) / n

    cfg: SineBPConfig

    def __init__(self, cfg: SineBPConfig, data: Any, device: torch.device) -> None:
        super().__init__(cfg, data, device)
        x = torch.arange(cfg.points, device=device, dtype=torch.float32)[:, None] / cfg.points
        self.x, self.y = x, self.truth(x)
        self.train_data = (self.x, self.y)

    def truth(self, x: torch.Tensor) -> torch.Tensor:
        return self.cfg.amplitude * torch.sin(2 * math.pi * x)

    def build_model(self) -> nn.Module:
        model = nn.Sequential(
            nn.Linear(1, self.cfg.hidden), nn.Sigmoid(), nn.Linear(self.cfg.hidden, 1)
        )
        if self.cfg.init == "uniform":  # the tutorial: weights uniform on [0, 1), biases zero
            for layer in (model[0], model[2]):
                nn.init.uniform_(layer.weight, 0.0, 1.0)
                nn.init.zeros_(layer.bias)
        return self.for_impl(model)

    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor | float]:
        mse = torch.mean((model(self.x) - self.y) ** 2)
        return {"loss": 0.5 * mse, "mse": mse}

    def figures(self, model: nn.Module, history: list[dict[str, Any]]) -> dict[str, Any]:
        grid = torch.linspace(0, 1, 400, device=self.device)[:, None]
        fig, ax = plots.figure()
        ax.plot(
            grid.cpu().numpy(),
            self.truth(grid).cpu().numpy(),
            color="tab:gray",
            lw=1,
            label="y = A sin(2 pi x)",
        )
        ax.scatter(self.x.cpu().numpy(), self.y.cpu().numpy(), s=10, label="data")
        ax.plot(grid.cpu().numpy(), model(grid).cpu().numpy(), color="tab:red", label="fit")
        mse = history[-1].get("mse") if history else None
        ax.set(xlabel="x", ylabel="y", title="sine fit" + (f" (mse {mse:.3g})" if mse else ""))
        ax.legend()
        return {"fit": fig}
