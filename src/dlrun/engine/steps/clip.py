"""Gradient clipping (``trainer.grad_clip``) on a list of gradients, as torch's own
``clip_grad_norm_`` and ``clip_grad_value_`` do it on ``.grad``: the same ops, so the same bits.

The step kinds call it between the gradients and the update; it returns the total norm before
clipping as a 0-dim tensor on the device, which the step hands to the loop with its loss (read in
the epoch's one host sync, never per step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from dlrun import compat

if TYPE_CHECKING:
    from dlrun.config.trainer import GradClipConfig

Clip = Callable[[Sequence[torch.Tensor]], torch.Tensor]
EPS = 1e-6  # clip_grad_norm_'s: grad * min(max_norm / (norm + 1e-6), 1)


def build(cfg: GradClipConfig) -> Clip | None:
    """Clip gradients in place and return their total 2-norm before clipping (None: off)."""
    if not cfg.on:
        return None
    max_norm, value = cfg.max_norm, cfg.value

    def clip(grads: Sequence[torch.Tensor]) -> torch.Tensor:
        norm = torch.nn.utils.get_total_norm(grads, 2.0, foreach=True)
        if max_norm is not None:
            coef = torch.clamp(max_norm / (norm + EPS), max=1.0)
            compat.foreach_mul_(grads, coef)
        if value is not None:
            compat.foreach_clamp_(grads, -value, value)
        return norm

    return clip


def with_norm(loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """What a clipping step returns: [loss, grad norm], one tensor for the loop to stack."""
    return torch.stack([loss.detach().reshape(()), norm.to(loss.dtype).reshape(())])
