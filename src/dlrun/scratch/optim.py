"""Optimizers written out by hand: SGD, SGD with momentum, Adam (the formulas of tutorial 004).

They subclass ``torch.optim.Optimizer`` only for its bookkeeping (parameter groups,
``zero_grad``, ``state_dict``/``load_state_dict``), so they checkpoint and resume like torch's
own; every update is spelled out below. Their state (momentum buffer, Adam's moments and step
count) lives in ``self.state`` and persists across steps: Adam's moments are not re-initialised
on each call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class _HandOptimizer(torch.optim.Optimizer):
    def _gradients(self, group: dict[str, Any]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, gradient with L2 weight decay added) for each parameter with a gradient."""
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            if group["weight_decay"]:
                g = g + group["weight_decay"] * p
            yield p, g


class ScratchSGD(_HandOptimizer):
    """w <- w - lr * g."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p, g in self._gradients(group):
                p -= group["lr"] * g


class ScratchMomentum(_HandOptimizer):
    """v <- momentum * v + g (v = g on the first step); w <- w - lr * v.

    This is torch.optim.SGD's form (lr applied after the buffer); the other common form,
    v <- momentum * v - lr * g, w <- w + v, is the same trajectory while lr stays constant."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p, g in self._gradients(group):
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = g.clone()
                else:
                    state["velocity"] = group["momentum"] * state["velocity"] + g
                p -= group["lr"] * state["velocity"]


class ScratchAdam(_HandOptimizer):
    """t <- t + 1; m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
    w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p, g in self._gradients(group):
                state = self.state[p]
                if "step" not in state:  # the first step of this parameter, never again
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["m"] = b1 * state["m"] + (1 - b1) * g
                state["v"] = b2 * state["v"] + (1 - b2) * g * g
                m_hat = state["m"] / (1 - b1**t)
                v_hat = state["v"] / (1 - b2**t)
                p -= group["lr"] * m_hat / (torch.sqrt(v_hat) + group["eps"])
