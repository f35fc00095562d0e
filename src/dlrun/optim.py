"""Optimizer configs -> torch.optim optimizers."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dlrun.schema import (
    AdamConfig,
    AdamWConfig,
    OptimizerConfig,
    RMSpropConfig,
    ScratchAdamConfig,
    ScratchMomentumConfig,
    ScratchSGDConfig,
    SGDConfig,
)


def build(cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    params = list(params)
    if isinstance(cfg, (ScratchSGDConfig, ScratchMomentumConfig, ScratchAdamConfig)):
        return build_scratch(cfg, params)
    if isinstance(cfg, AdamConfig):  # AdamWConfig is an AdamConfig with decoupled decay
        adam = torch.optim.AdamW if isinstance(cfg, AdamWConfig) else torch.optim.Adam
        return adam(
            params,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            amsgrad=cfg.amsgrad,
        )
    if isinstance(cfg, SGDConfig):
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            dampening=cfg.dampening,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
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
        )
    raise TypeError(f"no optimizer for {type(cfg).__name__}")


def build_scratch(
    cfg: ScratchSGDConfig | ScratchMomentumConfig | ScratchAdamConfig,
    params: list[torch.nn.Parameter],
) -> torch.optim.Optimizer:
    """The hand-written optimizers of dlrun.scratch.optim."""
    from dlrun.scratch import optim as scratch

    if isinstance(cfg, ScratchAdamConfig):
        return scratch.ScratchAdam(
            params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if isinstance(cfg, ScratchMomentumConfig):
        return scratch.ScratchMomentum(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return scratch.ScratchSGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
