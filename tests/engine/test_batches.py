"""The epoch's batches: gathered once or batch by batch, the same tensors in the same order."""

from __future__ import annotations

import importlib

import pytest
import torch

from dlrun.engine import steps

# the module, not the function of the same name that dlrun.engine.steps re-exports
batches_module = importlib.import_module("dlrun.engine.steps.batches")


@pytest.mark.parametrize("fast", [True, False])
def test_big_data_gathered_per_batch_gives_the_same_batches(
    monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    x, y = torch.randn(103, 7), torch.randint(0, 5, (103,))
    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    want = [(x[i], y[i]) for i in order.split(16)]
    once = list(steps.batches((x, y), order, 16, fast))
    monkeypatch.setattr(batches_module, "EPOCH_GATHER_BYTES", 0)  # as if it outgrew the cache
    each = list(steps.batches((x, y), order, 16, fast))
    for got in (once, each):
        assert len(got) == len(want) == 7
        for (a, b), (c, d) in zip(got, want, strict=True):
            assert torch.equal(a, c) and torch.equal(b, d)
