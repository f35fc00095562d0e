"""Losses with their gradients written by hand, and one training step of a scratch model.

Each loss returns (mean loss, d loss / d prediction); ``hand_loss`` runs forward, the loss and
the model's backward under ``no_grad`` and leaves the gradients in each parameter's ``.grad``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dlrun.scratch.layers import Layer

LossAndGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def half_mse(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mean((pred - target)^2) / 2 and its gradient (pred - target) / n."""
    residual = pred - target
    return 0.5 * torch.mean(residual**2), residual / residual.numel()


def softmax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of -log softmax(logits)[label] and its gradient (softmax - one_hot) / n.

    The logits are shifted by their row maximum first: exp never overflows."""
    n = logits.shape[0]
    shifted = logits - logits.max(1, keepdim=True).values
    exp = torch.exp(shifted)
    total = exp.sum(1, keepdim=True)
    rows = torch.arange(n, device=logits.device)
    loss = torch.mean(torch.log(total[:, 0]) - shifted[rows, labels])
    grad = exp / total
    grad[rows, labels] -= 1
    return loss, grad / n


def hand_loss(
    model: Layer, batch: tuple[torch.Tensor, ...], loss_and_grad: LossAndGrad
) -> torch.Tensor:
    """The batch's mean loss; every parameter's .grad filled by the hand-written backward."""
    x, y = batch
    with torch.no_grad():
        loss, grad = loss_and_grad(model(x), y)
        model.backward(grad)
    return loss
