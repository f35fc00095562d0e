"""Optimizer configs -> torch.optim optimizers.

``fused=True`` (the fast path) picks torch's fused kernels where the optimizer has them (SGD, Adam,
AdamW: one kernel for all parameters) and the multi-tensor ``foreach`` implementation otherwise.
"""

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


def skip_compiler_import() -> None:
    """Let torch.optim's bookkeeping run without importing torch's compiler (1-2 s of start-up).

    ``Optimizer.add_param_group``, ``state_dict``, ``load_state_dict`` and ``zero_grad`` are
    wrapped in a lazy ``torch._dynamo.disable`` whose first call imports ``torch._dynamo``, which
    costs more than the rest of a short run's start-up. The wrapper only matters inside a
    torch.compile'd region, and dlrun never calls these methods there (``trainer.compile``
    compiles the loss alone), so each is marked as already wrapped with itself. Where torch
    changes this wrapper, nothing is marked and torch's own behaviour stays.
    """
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        method = getattr(torch.optim.Optimizer, name, None)
        inner = getattr(method, "__wrapped__", None)
        code = getattr(method, "__code__", None)
        if inner is None or code is None or "__dynamo_disable" not in code.co_names:
            continue
        if not hasattr(inner, "__dynamo_disable"):
            setattr(inner, "__dynamo_disable", inner)


def build(
    cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter], fused: bool = False
) -> torch.optim.Optimizer:
    params = list(params)
    if isinstance(cfg, (ScratchSGDConfig, ScratchMomentumConfig, ScratchAdamConfig)):
        return build_scratch(cfg, params)
    # torch has fused kernels for these devices; elsewhere (mps) the default implementation
    fused = fused and all(p.device.type in ("cpu", "cuda") for p in params)
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


def momentum_buffers(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor]
) -> tuple[list[torch.Tensor], bool]:
    """SGD's momentum buffers for params, created as torch.optim.SGD does on its first step;
    True when they were just created (the fused kernel then copies the gradient into them)."""
    state = optimizer.state
    first = any("momentum_buffer" not in state[p] for p in params)
    if first:
        for p in params:
            state[p]["momentum_buffer"] = torch.empty_like(p)
    return [state[p]["momentum_buffer"] for p in params], first


def adam_states(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor]
) -> list[dict[str, torch.Tensor]]:
    """Adam's per-parameter state, created as torch.optim.Adam(fused=True) does."""
    state = optimizer.state
    amsgrad = optimizer.param_groups[0]["amsgrad"]
    for p in params:
        if len(state[p]) == 0:
            state[p]["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
            state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad:
                state[p]["max_exp_avg_sq"] = torch.zeros_like(
                    p, memory_format=torch.preserve_format
                )
    return [state[p] for p in params]


def fused_kind(optimizer: torch.optim.Optimizer) -> type[torch.optim.Optimizer] | None:
    """SGD, Adam or AdamW when one fused kernel can update the optimizer's one param group
    directly (the fast paths call it without ``step()``); None for anything else."""
    if len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if not group.get("fused") or group.get("differentiable") or group.get("maximize"):
        return None
    kind = type(optimizer)
    return kind if kind in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW) else None
