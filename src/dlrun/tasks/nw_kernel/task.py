"""Nadaraya-Watson kernel regression (tutorial 003, d2l "attention pooling").

50 noisy samples of y = 2 sin(x) + x^0.8 are the keys (x) and values (y); a query x_q is answered
with the attention-weighted mean of the values, the weights a softmax over the keys of the
Gaussian-kernel scores -((x_q - x_k) * w)^2 / 2. The non-parametric variant fixes w = 1 and
learns nothing; the parametric one learns w by SGD, each training point attending to the other
points only (leave-one-out), as the tutorial does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlrun import plots
from dlrun.tasks.base import Task
from dlrun.tasks.nw_kernel import NWKernelConfig

X_MAX = 5.0  # training x uniform on [0, X_MAX); test grid 0, 0.1, ..., X_MAX - 0.1
TEST_STEP = 0.1


def truth(x: torch.Tensor) -> torch.Tensor:
    return 2 * torch.sin(x) + x**0.8


class NWKernel(nn.Module):
    """Attention pooling with a Gaussian kernel of width 1 / w (w = 1 when not parametric)."""

    def __init__(self, parametric: bool) -> None:
        super().__init__()
        # the tutorial's init: w uniform on [0, 1), from torch's global RNG
        self.w = nn.Parameter(torch.rand(1)) if parametric else None

    def attention(
        self, queries: torch.Tensor, keys: torch.Tensor, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weights (Q, K): softmax over keys (K,) of -((q - k) * w)^2 / 2 for each query (Q,).

        ``exclude`` (Q, K), True where a query must not see a key (leave-one-out).
        """
        diff = queries[:, None] - keys[None, :]  # broadcast, no copies of the keys
        if self.w is not None:
            diff = diff * self.w
        scores = -(diff**2) / 2
        if exclude is not None:
            scores = scores.masked_fill(exclude, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        weights = self.attention(queries, keys, exclude)
        # one weighted mean of the values per query, batched over the queries
        return torch.einsum("qk,qk->q", weights, values.expand_as(weights))


class NWKernelRegression(Task):
    objective = "mse"
    maximize = False

    cfg: NWKernelConfig

    def __init__(self, cfg: NWKernelConfig, data: Any, device: torch.device) -> None:
        super().__init__(cfg, data, device)
        n = cfg.n_train
        # the tutorial's draws, in its order, from torch's global RNG (seeded by the run) on the
        # CPU, so every device gets the same data
        x, _ = torch.sort(torch.rand(n) * X_MAX)
        y = truth(x) + torch.normal(0.0, cfg.noise, (n,))
        self.x_train, self.y_train = x.to(device), y.to(device)
        self.x_test = torch.arange(0, X_MAX, TEST_STEP, device=device)
        self.y_truth = truth(self.x_test)
        self.keys = torch.arange(n, device=device)  # which training point is which key
        # a batch is (index, x, y) of some training points; their keys are all the others
        self.train_data = (self.keys, self.x_train, self.y_train)

    @property
    def loss_sums(self) -> tuple[str, str]:  # type: ignore[override]
        """The train and val losses are sums over different numbers of points."""
        return f"{self.cfg.n_train} training points", f"{len(self.x_test)} grid points"

    def build_model(self) -> nn.Module:
        return NWKernel(parametric=self.cfg.variant == "parametric")

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        index, x, y = batch
        exclude = index[:, None] == self.keys[None, :]  # leave-one-out: never attend to yourself
        predicted = model(x, self.x_train, self.y_train, exclude)
        # the tutorial's loss: (squared error / 2) summed over all n training points; a batch of m
        # points estimates that sum as n/m times its own (exactly the sum for the full batch)
        return ((predicted - y) ** 2).sum() * (0.5 * self.cfg.n_train / len(y))

    def predict(self, model: nn.Module) -> torch.Tensor:
        """Predictions on the test grid; keys and values are all the training points."""
        return model(self.x_test, self.x_train, self.y_train)

    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor | float]:
        squared = (self.predict(model) - self.y_truth) ** 2
        # loss: the training loss's measure (squared error / 2, summed) on the test grid
        return {"loss": 0.5 * squared.sum(), "mse": squared.mean()}

    def converged(self, model: nn.Module) -> bool:
        return model.w is None  # non-parametric: nothing to learn, one epoch scores it

    def report(self, model: nn.Module) -> str:
        if model.w is None:
            return "non-parametric Gaussian kernel (w = 1): nothing to train"
        w = float(model.w.detach())
        return f"learned kernel width w = {w:.4g} (a Gaussian kernel with sd 1/|w|)"

    def figures(self, model: nn.Module, history: list[dict[str, Any]]) -> dict[str, Any]:
        x_test = self.x_test.cpu().numpy()
        mse = history[-1].get("mse") if history else None
        fig, ax = plots.figure()
        ax.plot(x_test, self.y_truth.cpu().numpy(), color="tab:gray", label="truth")
        ax.plot(x_test, self.predict(model).cpu().numpy(), "--", color="tab:red", label="pred")
        ax.plot(
            self.x_train.cpu().numpy(),
            self.y_train.cpu().numpy(),
            "o",
            alpha=0.5,
            label="training points",
        )
        ax.set(
            xlabel="x",
            ylabel="y",
            xlim=(0, X_MAX),
            ylim=(-1, 5),
            title=f"Nadaraya-Watson, {self.cfg.variant}"
            + (f" (mse {mse:.3g})" if mse is not None else ""),
        )
        ax.legend()

        weights = model.attention(self.x_test, self.x_train).cpu().numpy()
        heat, hax = plots.figure(width=5.0, height=4.4)
        image = hax.imshow(weights, cmap="Reds", aspect="auto")
        heat.colorbar(image, ax=hax, label="attention weight")
        hax.set(
            xlabel="sorted training inputs (keys)",
            ylabel="test inputs (queries)",
            title="attention weights",
        )
        return {"fit": fig, "attention": heat}
