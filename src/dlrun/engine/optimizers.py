"""Optimizer configs -> torch.optim optimizers.

``fused=True`` (the fast path) picks torch's fused kernels where the optimizer has them (SGD, Adam,
AdamW: one kernel for all parameters) and the multi-tensor ``foreach`` implementation otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dlrun import compat
from dlrun.config.optimizers import (
    AdamConfig,
    AdamWConfig,
    OptimizerConfig,
    RMSpropConfig,
    ScratchAdamConfig,
    ScratchMomentumConfig,
    ScratchSGDConfig,
    SGDConfig,
)
from dlrun.scratch import optim as scratch


def build(
    cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter], fused: bool = False
) -> torch.optim.Optimizer:
    params = list(params)
    if isinstance(cfg, (ScratchSGDConfig, ScratchMomentumConfig, ScratchAdamConfig)):
        return build_scratch(cfg, params)
    # torch has fused kernels for these devices; elsewhere (mps), or in a torch without them,
    # the default implementation
    fused = fused and all(p.device.type in ("cpu", "cuda") for p in params)
    fused = fused and compat.has_fused_kernels()
    kernel = {"fused": True} if fused else {}
    if isinstance(cfg, AdamConfig):  # AdamWConfig is an AdamConfig with decoupled decay
        adam = torch.optim.AdamW if isinstance(cfg, AdamWConfig) else torch.optim.Adam
        return adam(
            params,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            amsgrad=cfg.amsgrad,
            **kernel,
        )
    if isinstance(cfg, SGDConfig):
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            dampening=cfg.dampening,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            **kernel,
        )
    if isinstance(cfg, RMSpropConfig):
        return torch.optim.RMSprop(
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=cfg.eps,
            momentum=cfg.momentum,
            centered=cfg.centered,
            weight_decay=cfg.weight_decay,
            **({"foreach": True} if fused else {}),
        )
    raise TypeError(f"no optimizer for {type(cfg).__name__}")


def build_scratch(
    cfg: ScratchSGDConfig | ScratchMomentumConfig | ScratchAdamConfig,
    params: list[torch.nn.Parameter],
) -> torch.optim.Optimizer:
    """The hand-written optimizers of dlrun.scratch.optim."""
    if isinstance(cfg, ScratchAdamConfig):
        return scratch.ScratchAdam(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if isinstance(cfg, ScratchMomentumConfig):
        return scratch.ScratchMomentum(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return scratch.ScratchSGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
