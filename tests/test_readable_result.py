"""A Result in a notebook: a readable repr, its metrics as a table, its curves in one call;
summary.json's float32 values at their shortest form; curves titled with the run's name, on
whole epochs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

import dlrun
from dlrun import plots
from dlrun.rundir.summary import shortest


def test_shortest_keeps_float32_values_and_leaves_float64_ones() -> None:
    noisy = struct.unpack("f", struct.pack("f", 0.9))[0]
    assert noisy == 0.8999999761581421 and shortest(noisy) == 0.9
    assert struct.unpack("f", struct.pack("f", shortest(noisy)))[0] == noisy  # the same float32
    assert shortest(0.1) == 0.1 and shortest(1 / 3) == 1 / 3  # float64 values stay as they are
    assert shortest(3) == 3 and shortest(True) is True and shortest(1e300) == 1e300
    nan = shortest(float("nan"))
    assert nan != nan


def test_a_result_shows_itself_tabulates_and_plots(tmp_path: Path) -> None:
    result = dlrun.run(
        "task=fizzbuzz",
        "trainer.epochs=30",
        "trainer.log_every=1",
        "trainer.validate_every=1",
        "trainer.plots=false",
        "device=cpu",
        run_dir=tmp_path / "run",
    )
    summary = result.summary
    text = repr(result)
    assert text.startswith("Result(completed, 'fizzbuzz epochs=30 log_every=1 validate_every=1'")
    assert f"accuracy={summary.objective:.4g}" in text and "best accuracy=" in text
    assert "epochs=30/30" in text and str(tmp_path / "run") in text
    # summary.json holds float32 values at their shortest form; metrics.jsonl in full
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    last = [r for r in result.metrics if r["split"] == "val"][-1]
    assert stored["final"]["accuracy"] == shortest(last["accuracy"])
    assert len(repr(stored["final"]["loss"])) < len(repr(last["loss"])) or (
        stored["final"]["loss"] == last["loss"]
    )

    pandas = pytest.importorskip("pandas")
    table = result.table()
    assert isinstance(table, pandas.DataFrame) and len(table) == len(result.metrics) == 60
    val = result.table("val")
    assert list(val["epoch"]) == list(range(1, 31)) and val["accuracy"].iloc[-1] == last["accuracy"]

    curves = result.plot()
    assert curves._repr_png_().startswith(b"\x89PNG")
    assert curves.figure._suptitle.get_text() == summary.name
    curves.save(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_curves_have_whole_epoch_ticks() -> None:
    rows = [{"epoch": e, "split": s, "loss": 1 / e} for e in (1, 2, 3) for s in ("train", "val")]
    fig = plots.curves(rows, "loss", title="sine-bp lr=0.1")
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks)
    assert fig._suptitle.get_text() == "sine-bp lr=0.1"


def test_losses_summed_over_different_points_are_labelled_on_scales_of_their_own() -> None:
    rows = [{"epoch": e, "split": s, "loss": 10 / e} for e in (1, 2) for s in ("train", "val")]
    fig = plots.curves(rows, "loss", sums=("50 training points", "50 grid points"))
    train_axis, val_axis = fig.axes  # val's loss on a twin axis
    assert "a sum" in train_axis.get_ylabel() and "a sum" in val_axis.get_ylabel()
    labels = [t.get_text() for t in train_axis.get_legend().get_texts()]
    assert labels == ["train (sum over 50 training points)", "val (sum over 50 grid points)"]
    fig = plots.curves(rows, "loss")  # a mean loss: one scale, one axis
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "loss"
