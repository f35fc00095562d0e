"""logger=[jsonl,tensorboard,csv]: every destination holds the same rows as metrics.jsonl."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

SHORT = (
    "task=sine-bp",
    "trainer.validate_every=2",
    "trainer.log_every=1",
    "trainer.plots=false",
    "logger=[jsonl,tensorboard,csv]",
)


def _expected(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as TensorBoard tags: '<split>/<metric>' -> [(epoch, value), ...]."""
    tags: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key not in ("epoch", "split"):
                tags.setdefault(f"{row['split']}/{key}", []).append((row["epoch"], value))
    return tags


def _tensorboard(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {
                k: int(v) if k == "epoch" else v if k == "split" else float(v)
                for k, v in row.items()
                if v != ""
            }
            for row in csv.DictReader(f)
        ]


def _check_same(run_dir: Path, rows: list[dict]) -> None:
    (folder,) = (run_dir / "tensorboard").iterdir()  # one run, named after the run's name
    assert folder.name == json.loads((run_dir / "summary.json").read_text())["name"]
    tb = _tensorboard(folder)
    want = _expected(rows)
    assert sorted(tb) == sorted(want)
    for tag, points in want.items():
        got = tb[tag]
        assert [s for s, _ in got] == [s for s, _ in points], tag  # one point per epoch
        for (_, a), (_, b) in zip(got, points, strict=True):
            assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (tag, a, b)  # float32 events
    assert _csv(run_dir / "metrics.csv") == rows


def test_tensorboard_and_csv_hold_the_metrics_rows(dlrun) -> None:
    r = dlrun(*SHORT, "trainer.epochs=6")
    assert r.code == 0, r.err
    rows = r.metrics()
    assert [(m["epoch"], m["split"]) for m in rows][:3] == [(1, "train"), (2, "train"), (2, "val")]
    assert list((r.run_dir / "tensorboard").glob("*/events.out.tfevents.*"))
    _check_same(r.run_dir, rows)
    assert r.metrics()[-1]["mse"] > 0


def test_a_resume_does_not_duplicate_rows(dlrun, tmp_path) -> None:
    first = dlrun(*SHORT, "trainer.epochs=4")
    assert first.code == 0, first.err
    d = first.run_dir
    at_4 = tmp_path / "last-4.pt"
    shutil.copy(d / "checkpoints/last.pt", at_4)
    assert dlrun(f"resume={d}", "trainer.epochs=6").code == 0
    shutil.copy(at_4, d / "checkpoints/last.pt")  # as if it stopped after epoch 6 unsaved
    again = dlrun(f"resume={d}", "trainer.epochs=6")
    assert again.code == 0, again.err
    rows = first.metrics()
    pairs = [(m["epoch"], m["split"]) for m in rows]
    assert len(pairs) == len(set(pairs)) and pairs[-1] == (6, "val")
    _check_same(d, rows)  # epochs 5 and 6, trained twice, appear once everywhere


def test_unknown_logger_is_refused_at_compose_time(dlrun) -> None:
    r = dlrun("logger=[jsonl,wandb]")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "logger/wandb" in r.err and "tensorboard" in r.err  # names what exists
    assert not (r.run_dir).exists()


def test_missing_tensorboard_names_the_extra(dlrun, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    r = dlrun("logger=[jsonl,tensorboard]", "task=sine-bp")
    assert r.code == 2, r.err
    assert r.err.strip() == (
        "dlrun: error: logger=tensorboard needs the tensorboard package, which is not "
        "installed: pip install 'dlrun[tensorboard]'"
    )
    assert not r.run_dir.exists()


@pytest.mark.parametrize("logger", ["csv", "[csv]"])
def test_one_logger_without_brackets(dlrun, logger: str) -> None:
    r = dlrun("task=sine-bp", "trainer.epochs=2", "trainer.plots=false", f"logger={logger}")
    assert r.code == 0, r.err
    assert (r.run_dir / "metrics.csv").is_file() and (r.run_dir / "metrics.jsonl").is_file()
    assert not (r.run_dir / "tensorboard").exists()
