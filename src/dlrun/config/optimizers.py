"""The optimizers' typed settings (the ``optimizer`` group).

Torch-free, as dlrun.config.schema: config errors are answered in well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dlrun.errors import check as _check

# --------------------------------------------------------------------------- optimizers


@dataclass
class OptimizerConfig:
    lr: float = 0.01
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check(0 < self.lr < math.inf, "optimizer.lr", "a finite number > 0", self.lr)
        _check(self.weight_decay >= 0, "optimizer.weight_decay", "a number >= 0", self.weight_decay)


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.momentum < 1, "optimizer.momentum", "a number in [0, 1)", self.momentum)
        _check(
            not self.nesterov or (self.momentum > 0 and self.dampening == 0),
            "optimizer.nesterov",
            "false unless optimizer.momentum > 0 and optimizer.dampening = 0",
            self.nesterov,
        )


def _check_adam(betas: list[float], eps: float) -> None:
    _check(
        len(betas) == 2 and all(0 <= b < 1 for b in betas),
        "optimizer.betas",
        "two numbers in [0, 1), e.g. [0.9,0.999]",
        list(betas),  # not ListConfig's repr
    )
    _check(eps > 0, "optimizer.eps", "a number > 0", eps)


@dataclass
class AdamConfig(OptimizerConfig):
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_adam(self.betas, self.eps)


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = 0.01


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.alpha < 1, "optimizer.alpha", "a number in [0, 1)", self.alpha)
        _check(0 <= self.momentum < 1, "optimizer.momentum", "a number in [0, 1)", self.momentum)
        _check(self.eps > 0, "optimizer.eps", "a number > 0", self.eps)


@dataclass
class ScratchSGDConfig(OptimizerConfig):
    """Hand-written SGD (dlrun.scratch.optim)."""


@dataclass
class ScratchMomentumConfig(OptimizerConfig):
    """Hand-written SGD with momentum (dlrun.scratch.optim)."""

    momentum: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.momentum < 1, "optimizer.momentum", "a number in [0, 1)", self.momentum)


@dataclass
class ScratchAdamConfig(OptimizerConfig):
    """Hand-written Adam (dlrun.scratch.optim)."""

    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_adam(self.betas, self.eps)


OPTIMIZER_SCHEMAS: dict[str, type[OptimizerConfig]] = {
    "sgd": SGDConfig,
    "adam": AdamConfig,
    "adamw": AdamWConfig,
    "rmsprop": RMSpropConfig,
    "scratch_sgd": ScratchSGDConfig,
    "scratch_momentum": ScratchMomentumConfig,
    "scratch_adam": ScratchAdamConfig,
}
