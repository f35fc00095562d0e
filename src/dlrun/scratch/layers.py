"""Layers with a hand-written backward pass, for training without autograd.

Each layer caches what its backward needs during ``forward`` (in train mode) and
``backward(grad_out)`` writes its parameters' ``.grad`` and returns the gradient for its input.
Parameter names match torch's layers (``Sequential`` of ``Linear`` gives ``0.weight``,
``0.bias``, ...), so a torch model's ``state_dict`` loads into its scratch twin and back.

The parameters stay ``nn.Parameter`` with ``requires_grad=True``: any optimizer (torch's or
dlrun's own) steps them, and autograd can still differentiate the same forward to check the
hand-written gradients (``dlrun-gradcheck``). The hand-written path runs under ``no_grad``.
"""

from __future__ import annotations

import torch
from torch import nn


class Layer(nn.Module):
    """A module whose backward is written by hand."""

    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def remember(self, **tensors: torch.Tensor) -> None:
        """Keep what backward needs, only when training (evaluation keeps nothing)."""
        if self.training:
            self.__dict__.update({f"_{k}": v for k, v in tensors.items()})

    def recall(self, name: str) -> torch.Tensor | torch.Size:
        value = self.__dict__.get(f"_{name}")
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward before a forward in train mode")
        return value


def _set_grad(param: torch.Tensor, grad: torch.Tensor) -> None:
    """Accumulate like autograd does, so zero_grad() and set_to_none both work. `grad` is
    always a fresh tensor (a product or a sum), so it is stored without a copy."""
    if param.grad is None:
        param.grad = grad
    else:
        param.grad += grad


class Linear(Layer):
    """y = x W^T + b. Backward: dW = dy^T x, db = sum of dy over the batch, dx = dy W.

    With the loss MSE/2 over n rows, dy = (x W^T + b - y) / n, so dW is the closed form
    X^T (X w - y) / n of linear regression (transposed to W's layout)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.remember(x=x)
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias

    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        x = self.recall("x")
        _set_grad(self.weight, grad_out.T @ x)
        if self.bias is not None:
            _set_grad(self.bias, grad_out.sum(0))
        return grad_out @ self.weight


class ReLU(Layer):
    """max(x, 0). Backward passes the gradient where the input was positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.remember(x=x)
        return x.clamp_min(0)

    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out * (self.recall("x") > 0)


class Sigmoid(Layer):
    """s = 1 / (1 + e^-x). Backward: s (1 - s), from the cached output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)  # the formula above, without e^-x overflowing for x << 0
        self.remember(s=s)
        return s

    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        s = self.recall("s")
        return grad_out * s * (1 - s)


class Flatten(Layer):
    """(N, ...) -> (N, -1). Backward restores the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.remember(shape=torch.Size(x.shape))
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.reshape(self.recall("shape"))


class Sequential(Layer):
    """Layers in order; backward runs them in reverse."""

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x

    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        for layer in reversed(list(self.children())):
            grad_out = layer.backward(grad_out)
        return grad_out


def from_torch(module: nn.Module) -> Layer:
    """The scratch twin of a torch model built from Linear, ReLU, Sigmoid, Flatten and
    Sequential, with the same weights (and the same state_dict keys)."""
    if isinstance(module, nn.Sequential):
        return Sequential(*(from_torch(m) for m in module))
    if isinstance(module, nn.Linear):
        return Linear(module.weight, module.bias)
    simple = {nn.ReLU: ReLU, nn.Sigmoid: Sigmoid, nn.Flatten: Flatten}
    for torch_type, layer in simple.items():
        if type(module) is torch_type:
            return layer()
    raise TypeError(f"no scratch layer for {type(module).__name__}")
