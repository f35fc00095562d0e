"""The fast autograd step: ``torch.autograd.grad``, then the optimizer's fused kernel called
directly on the optimizer's own state.

For the small models dlrun trains, a step costs little arithmetic and a lot of per-op overhead:
``optimizer.step()`` walks param groups, hooks and per-tensor Python, and ``zero_grad`` frees and
re-allocates every gradient. Here the gradients come from ``torch.autograd.grad`` (nothing to
zero, nothing accumulated) and SGD, Adam and AdamW update through the fused kernels that
``torch.optim`` itself runs with ``fused=True``, with the same state keys, so checkpoints and
resume are unchanged. Other optimizers get the gradients and call their own (foreach)
``step()``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dlrun import compat
from dlrun.engine.steps.batches import Batch, Step
from dlrun.engine.steps.clip import Clip, with_norm

Update = Callable[[list[torch.Tensor], list[torch.Tensor]], None]


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


def direct_update(optimizer: torch.optim.Optimizer) -> Update | None:
    """The fused update of SGD, Adam or AdamW on the optimizer's own state (None: another
    optimizer, or a torch without the kernel).

    The same kernels and state keys as ``torch.optim`` with ``fused=True``, without its per-step
    bookkeeping.
    """
    kind = fused_kind(optimizer)
    group = optimizer.param_groups[0]

    if kind is torch.optim.SGD:
        fused_sgd = compat.fused_kernel("sgd")
        if fused_sgd is None:
            return None

        def sgd(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
            momentum = group["momentum"]
            buffers, first = momentum_buffers(optimizer, params) if momentum != 0 else ([], False)
            fused_sgd(
                params,
                grads,
                buffers,
                weight_decay=group["weight_decay"],
                momentum=momentum,
                lr=group["lr"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=False,
                is_first_step=first,
            )

        return sgd

    if kind in (torch.optim.Adam, torch.optim.AdamW):
        decoupled = kind is torch.optim.AdamW or group.get("decoupled_weight_decay")
        fused = compat.fused_kernel("adamw" if decoupled else "adam")
        if fused is None:
            return None

        def adam(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
            amsgrad = group["amsgrad"]
            states = adam_states(optimizer, params)
            steps = [s["step"] for s in states]
            compat.foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            fused(
                params,
                grads,
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=amsgrad,
                maximize=False,
            )

        return adam
    return None


def autograd_step(
    loss_fn: Step,
    optimizer: torch.optim.Optimizer,
    update: Update | None,
    clip: Clip | None = None,
) -> Step:
    """Gradients by ``torch.autograd.grad``, then ``update`` (None: the optimizer's ``step()``).
    A parameter the loss does not use gets no gradient and is left alone. ``clip``: the
    gradients are clipped first, and the step returns [loss, gradient norm before clipping]."""
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def step(batch: Batch) -> torch.Tensor:
        loss = loss_fn(batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        norm = None
        if clip is not None:
            with torch.no_grad():
                norm = clip([g for g in grads if g is not None])
        if update is None:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
        else:
            used = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
            if used:
                with torch.no_grad():
                    update([p for p, _ in used], [g for _, g in used])
        return loss.detach() if norm is None else with_norm(loss, norm)

    return step
