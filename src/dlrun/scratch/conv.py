"""2-d convolution (cross-correlation, as torch's) written two ways: a naive loop over output
positions, and im2col: every receptive field unrolled into a column, then one matrix product.
Inputs (N, C_in, H, W), weights (C_out, C_in, kH, kW)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


METHODS = ("im2col", "naive")


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 0,
    method: str = "im2col",
) -> torch.Tensor:
    """out[n, o, i, j] = sum over c, u, v of x[n, c, i*s + u, j*s + v] * w[o, c, u, v] + b[o]
    (x zero-padded), by the naive loops or by im2col."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    oh, ow = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    if method == "naive":
        out = _naive(F.pad(x, (padding,) * 4), weight, stride, oh, ow)
    else:  # one matrix product: (C_out, C_in*kh*kw) @ (N, C_in*kh*kw, L)
        cols = im2col(x, kh, kw, stride, padding)
        out = (weight.reshape(c_out, -1) @ cols).reshape(n, c_out, oh, ow)
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out


def _naive(x: torch.Tensor, weight: torch.Tensor, stride: int, oh: int, ow: int) -> torch.Tensor:
    """One output position at a time, over the padded input."""
    c_out, _, kh, kw = weight.shape
    out = x.new_zeros(x.shape[0], c_out, oh, ow)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            # (n, c, kh, kw) x (o, c, kh, kw) -> (n, o)
            out[:, :, i, j] = (patch[:, None] * weight[None]).sum(dim=(2, 3, 4))
    return out


def im2col(x: torch.Tensor, kh: int, kw: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """(N, C, H, W) -> (N, C*kh*kw, L): column l holds the receptive field of output position l
    (row-major), its rows ordered (c, u, v) like a flattened weight."""
    n, c, h, w = x.shape
    x = F.pad(x, (padding,) * 4)
    oh, ow = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    cols = x.new_empty(n, c, kh, kw, oh, ow)
    for u in range(kh):  # one strided slice per kernel offset, not one per output position
        for v in range(kw):
            cols[:, :, u, v] = x[
                :, :, u : u + stride * (oh - 1) + 1 : stride, v : v + stride * (ow - 1) + 1 : stride
            ]
    return cols.reshape(n, c * kh * kw, oh * ow)


class Conv2d(nn.Module):
    """A square-kernel convolution layer; method "im2col" (fast) or "naive" (the loops)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        method: str = "im2col",
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
        self.stride, self.padding, self.method = stride, padding, method
        fan_in = in_channels * kernel_size * kernel_size
        bound = fan_in**-0.5
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = (
            nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.method)
