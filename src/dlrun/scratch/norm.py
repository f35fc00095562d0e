"""Layer normalisation and batch normalisation, written out (forward only; autograd
differentiates them).

BatchNorm follows PyTorch's momentum convention:
``running = (1 - momentum) * running + momentum * batch_statistic`` (default 0.1), and the
running variance takes the unbiased batch variance while the batch itself is normalised with the
biased one. The tutorial's hand-written version weights them the other way round,
``running = (1 - momentum) * batch + momentum * running``: its momentum m is PyTorch's 1 - m.
"""

from __future__ import annotations

import torch
from torch import nn


def layer_norm(
    x: torch.Tensor,
    normalized_shape: tuple[int, ...],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalise over the last len(normalized_shape) dimensions: (x - mean) / sqrt(var + eps),
    with the biased variance, then scale and shift."""
    dims = tuple(range(-len(normalized_shape), 0))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


class LayerNorm(nn.Module):
    def __init__(
        self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, affine: bool = True
    ) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        self.normalized_shape = tuple(shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape)) if affine else None
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class BatchNorm(nn.Module):
    """Batch normalisation over every dimension but the channels (dimension 1): inputs
    (N, C), (N, C, L) or (N, C, H, W). Training normalises with the batch's statistics and
    updates the running ones; evaluation normalises with the running ones."""

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True
    ) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)  # a (C,) vector broadcast along dimension 1
        if self.training:
            mean = x.mean(dim=dims)
            var = ((x - mean.reshape(shape)) ** 2).mean(dim=dims)  # biased: to normalise
            count = x.numel() // x.shape[1]
            with torch.no_grad():
                unbiased = var * count / max(count - 1, 1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y
