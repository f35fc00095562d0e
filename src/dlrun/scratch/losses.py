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
    """Mean of -log softmax(logits)[label] = logsumexp(logits) - logits[label], and its
    gradient (softmax(logits) - one_hot(label)) / n."""
    n = logits.shape[0]
    rows = torch.arange(n, device=logits.device)
    loss = torch.mean(torch.logsumexp(logits, 1) - logits[rows, labels])
    grad = torch.softmax(logits, 1)
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
