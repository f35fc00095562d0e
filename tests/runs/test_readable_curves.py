"""Curves with enough points by default: a task whose cadence is null validates and logs about
100 times a run, whatever its length."""

from __future__ import annotations

import pytest

from dlrun.config.trainer import TrainerConfig


@pytest.mark.parametrize(("epochs", "points"), [(300, 100), (250, 125), (40, 40)])
def test_a_run_of_any_length_has_about_a_hundred_points(dlrun, epochs: int, points: int) -> None:
    r = dlrun("task=sine-bp", f"trainer.epochs={epochs}", "trainer.plots=false", "device=cpu")
    assert r.code == 0, r.err
    rows = r.metrics()
    for split in ("train", "val"):
        epochs_logged = [m["epoch"] for m in rows if m["split"] == split]
        assert len(epochs_logged) == points, split
        assert epochs_logged[-1] == epochs


def test_a_set_cadence_is_kept_and_null_is_epochs_over_a_hundred() -> None:
    assert TrainerConfig(epochs=10_000, log_every=None).every("log_every") == 100
    assert TrainerConfig(epochs=99, validate_every=None).every("validate_every") == 1
    assert TrainerConfig(epochs=10_000, log_every=7).every("log_every") == 7
