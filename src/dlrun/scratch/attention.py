"""Scaled dot-product attention, multi-head attention and self-attention, written out.

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask is True where a
query MAY attend to a key (the tutorial's ``masked_fill(mask, -inf)`` marks the opposite);
a floating mask is added to the scores. ``nn.MultiheadAttention``'s boolean ``attn_mask`` is True
where attention is NOT allowed: pass ``~mask`` there.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v over (..., L, d) queries and (..., S, d) keys.

    Returns (output (..., L, d_v), weights (..., L, S))."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    scores = scores - scores.amax(-1, keepdim=True)
    weights = torch.exp(scores)
    weights = weights / weights.sum(-1, keepdim=True)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """h heads of d = embed_dim / h: project q, k, v, attend per head, concatenate, project.

    The projections are stored like ``nn.MultiheadAttention``'s (q, k, v stacked in
    ``in_proj_weight``/``in_proj_bias``, then ``out_proj``), so its weights copy over as they
    are. Inputs are batch first: (N, L, embed_dim)."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        bound = math.sqrt(6 / (2 * embed_dim))  # xavier uniform over the (E, E) blocks
        self.in_proj_weight = nn.Parameter(
            torch.empty(3 * embed_dim, embed_dim).uniform_(-bound, bound)
        )
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _heads(self, x: torch.Tensor, which: int) -> torch.Tensor:
        """Project with block `which` of the stacked weights: (N, L, E) -> (N, h, L, d)."""
        e = self.embed_dim
        w = self.in_proj_weight[which * e : (which + 1) * e]
        y = x @ w.T
        if self.in_proj_bias is not None:
            y = y + self.in_proj_bias[which * e : (which + 1) * e]
        n, length, _ = y.shape
        return y.reshape(n, length, self.num_heads, e // self.num_heads).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mask (L, S) or (N, L, S), shared by the heads. Returns (output (N, L, E), the
        attention weights averaged over the heads (N, L, S))."""
        q, k, v = self._heads(query, 0), self._heads(key, 1), self._heads(value, 2)
        if mask is not None and mask.dim() == 3:
            mask = mask[:, None]  # the same mask for every head
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        n, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(n, length, self.embed_dim)  # concatenate the heads
        return self.out_proj(out), weights.mean(1)


class SelfAttention(MultiHeadAttention):
    """Multi-head attention of a sequence to itself (queries, keys and values all from x)."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(x, x, x, mask)


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(L, L), True on and below the diagonal: position i attends to positions <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()
