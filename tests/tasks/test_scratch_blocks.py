"""dlrun.scratch's building blocks against torch's own modules, and beam search against an
exhaustive search."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlrun.scratch.attention import (
    MultiHeadAttention,
    SelfAttention,
    causal_mask,
    scaled_dot_product_attention,
)
from dlrun.scratch.beam import beam_search
from dlrun.scratch.conv import Conv2d, conv2d, im2col
from dlrun.scratch.norm import BatchNorm, LayerNorm

D = torch.float64


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5), (2, 3, 4, 5)])
def test_layer_norm_matches_nn_layernorm(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    normalized = shape[1:]
    x = torch.randn(shape, dtype=D) * 3 + 1
    theirs = nn.LayerNorm(normalized, dtype=D)
    ours = LayerNorm(normalized).double()
    with torch.no_grad():
        for p in (theirs.weight, theirs.bias):
            p.normal_()
    ours.load_state_dict(theirs.state_dict())
    close(ours(x), theirs(x))
    # gradients flow the same way too
    ours(x).pow(2).sum().backward()
    theirs(x).pow(2).sum().backward()
    close(ours.weight.grad, theirs.weight.grad)


@pytest.mark.parametrize(
    ("shape", "reference"),
    [((16, 3), nn.BatchNorm1d), ((8, 3, 7), nn.BatchNorm1d), ((4, 3, 5, 6), nn.BatchNorm2d)],
)
def test_batch_norm_matches_torch_in_train_and_eval(shape, reference) -> None:
    torch.manual_seed(0)
    theirs = reference(3, momentum=0.2, dtype=D)
    ours = BatchNorm(3, momentum=0.2).double()
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict(), strict=False)  # theirs also counts batches
    for step in range(5):  # training: batch statistics, running statistics updated
        x = torch.randn(shape, dtype=D) * (step + 1) + step
        close(ours(x), theirs(x))
        close(ours.running_mean, theirs.running_mean)
        close(ours.running_var, theirs.running_var)
    ours.eval()
    theirs.eval()
    x = torch.randn(shape, dtype=D)
    close(ours(x), theirs(x))  # evaluation: the running statistics
    assert not torch.allclose(ours(x), F.batch_norm(x, None, None, training=True))


def test_batch_norm_momentum_is_pytorchs_not_the_tutorials() -> None:
    """After one batch from zero: running_mean = momentum * batch mean (PyTorch); the tutorial's
    convention would give (1 - momentum) * batch mean."""
    bn = BatchNorm(1, momentum=0.1, affine=False)
    bn(torch.full((4, 1), 10.0) + torch.arange(4.0)[:, None])
    assert bn.running_mean.item() == pytest.approx(0.1 * 11.5)


@pytest.mark.parametrize(("stride", "padding", "bias"), [(1, 0, True), (2, 1, True), (1, 2, False)])
def test_conv2d_naive_and_im2col_match_f_conv2d(stride: int, padding: int, bias: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8, dtype=D)
    w = torch.randn(4, 3, 3, 3, dtype=D)
    b = torch.randn(4, dtype=D) if bias else None
    expected = F.conv2d(x, w, b, stride=stride, padding=padding)
    close(conv2d(x, w, b, stride, padding, method="naive"), expected)
    close(conv2d(x, w, b, stride, padding, method="im2col"), expected)
    with pytest.raises(ValueError, match="method='fft'"):
        conv2d(x, w, method="fft")


def test_im2col_columns_are_the_receptive_fields() -> None:
    x = torch.arange(2 * 4 * 5, dtype=D).reshape(1, 2, 4, 5)
    cols = im2col(x, 2, 3, stride=1)
    assert cols.shape == (1, 2 * 2 * 3, 3 * 3)
    close(cols[0, :, 4], x[0, :, 1:3, 1:4].reshape(-1))  # output (1, 1): rows 1-2, columns 1-3


def test_conv2d_module_matches_nn_conv2d() -> None:
    torch.manual_seed(0)
    theirs = nn.Conv2d(2, 5, 3, stride=2, padding=1, dtype=D)
    x = torch.randn(3, 2, 10, 10, dtype=D)
    for method in ("im2col", "naive"):
        ours = Conv2d(2, 5, 3, stride=2, padding=1, method=method).double()
        ours.load_state_dict(theirs.state_dict())
        close(ours(x), theirs(x))
    with pytest.raises(ValueError, match="method"):
        Conv2d(1, 1, 3, method="fft")


def test_scaled_dot_product_attention_with_and_without_a_mask() -> None:
    torch.manual_seed(0)
    q = torch.randn(2, 3, 5, 8, dtype=D)
    k = torch.randn(2, 3, 7, 8, dtype=D)
    v = torch.randn(2, 3, 7, 4, dtype=D)
    out, weights = scaled_dot_product_attention(q, k, v)
    close(out, F.scaled_dot_product_attention(q, k, v))
    close(weights.sum(-1), torch.ones(2, 3, 5, dtype=D))
    mask = torch.rand(2, 1, 5, 7) > 0.4
    mask[..., 0] = True  # every query may attend to something
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert torch.all(weights[~mask.expand_as(weights)] == 0)
    additive = torch.randn(5, 7, dtype=D)
    out, _ = scaled_dot_product_attention(q, k, v, additive)
    close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=additive))


def copied_torch_mha(ours: MultiHeadAttention, heads: int) -> nn.MultiheadAttention:
    theirs = nn.MultiheadAttention(ours.embed_dim, heads, batch_first=True, dtype=D)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.3)
    theirs.load_state_dict(ours.state_dict())  # the same parameter layout
    return theirs


def test_multi_head_attention_matches_nn_multiheadattention() -> None:
    torch.manual_seed(0)
    ours = MultiHeadAttention(12, 3).double()
    theirs = copied_torch_mha(ours, 3)
    q = torch.randn(2, 4, 12, dtype=D)
    kv = torch.randn(2, 6, 12, dtype=D)
    value = torch.randn(2, 6, 12, dtype=D)
    out, weights = ours(q, kv, value)
    ref_out, ref_weights = theirs(q, kv, value)
    close(out, ref_out)
    close(weights, ref_weights)
    mask = torch.rand(2, 4, 6) > 0.5
    mask[..., 0] = True
    out, weights = ours(q, kv, value, mask)
    # torch's per-batch masks are stacked per head, and True means "may not attend" there
    ref_out, ref_weights = theirs(q, kv, value, attn_mask=~mask.repeat_interleave(3, dim=0))
    close(out, ref_out)
    close(weights, ref_weights)


def test_self_attention_with_a_causal_mask_matches_nn_multiheadattention() -> None:
    torch.manual_seed(0)
    ours = SelfAttention(8, 2).double()
    theirs = copied_torch_mha(ours, 2)
    x = torch.randn(3, 5, 8, dtype=D)
    mask = causal_mask(5)
    out, weights = ours(x, mask)
    ref_out, ref_weights = theirs(x, x, x, attn_mask=~mask)
    close(out, ref_out)
    close(weights, ref_weights)
    assert torch.all(weights.triu(1) == 0)  # nothing attends to the future
    # changing the last position changes no earlier output
    later = x.clone()
    later[:, -1] += 1
    close(ours(later, mask)[0][:, :-1], out[:, :-1])


def exhaustive(probs: torch.Tensor, k: int) -> tuple[list[list[tuple[int, ...]]], torch.Tensor]:
    """Every sequence scored; the k best per batch row."""
    _, seq, vocab = probs.shape
    rows, scores = [], []
    for p in probs:
        scored = [
            (sum(float(p[i, t].log()) for i, t in enumerate(s)), s)
            for s in itertools.product(range(vocab), repeat=seq)
        ]
        scored.sort(key=lambda pair: -pair[0])
        rows.append([s for _, s in scored[:k]])
        scores.append([score for score, _ in scored[:k]])
    return rows, torch.tensor(scores, dtype=D)


@pytest.mark.parametrize(("vocab", "seq", "beam"), [(3, 4, 3), (4, 3, 5), (2, 5, 1), (3, 2, 9)])
def test_beam_search_finds_the_exhaustive_best(vocab: int, seq: int, beam: int) -> None:
    torch.manual_seed(vocab * 10 + seq)
    probs = torch.softmax(torch.randn(4, seq, vocab, dtype=D) * 2, dim=-1)
    tokens, scores = beam_search(probs, beam)
    assert tokens.shape == (4, beam, seq) and scores.shape == (4, beam)
    best, best_scores = exhaustive(probs, beam)
    assert [[tuple(s) for s in row] for row in tokens.tolist()] == best
    close(scores, best_scores)


def test_beam_search_refuses_an_impossible_beam() -> None:
    with pytest.raises(ValueError, match="beam_size=9"):
        beam_search(torch.full((1, 2, 2), 0.5), 9)
