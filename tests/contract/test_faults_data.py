"""A loss that is NaN or infinite before the first update comes from the data (or the model's
initial output), not from the learning rate: the line says so (docs/faults.md)."""

from __future__ import annotations

import pytest

QUIET = ("trainer.plots=false", "trainer.progress=false", "device=cpu", "trainer.epochs=3")


@pytest.mark.parametrize(
    "args",
    [
        ("task=sine-bp", "task.amplitude=1e20"),
        ("task=sine-bp", "task.amplitude=nan"),
        ("task=nw-kernel", "task.noise=1e20"),
    ],
    ids=["huge amplitude", "nan amplitude", "huge noise"],
)
def test_a_non_finite_loss_before_any_update_blames_the_data(dlrun, args) -> None:
    r = dlrun(*args, *QUIET)
    assert r.code == 3, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: "), r.err
    line = lines[0]
    assert "at epoch 1, step 1 " in line and "before any update" in line
    assert (
        "the data" in line and "lower the learning rate" not in line and "optimizer.lr" not in line
    )
    assert r.summary()["status"] == "failed"


def test_a_loss_that_goes_non_finite_after_updates_still_names_the_learning_rate(dlrun) -> None:
    r = dlrun("task=fizzbuzz", "optimizer.lr=1e30", *QUIET)
    assert r.code == 3 and "step 2 of 8" in r.err and "lower the learning rate" in r.err
