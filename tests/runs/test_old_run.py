"""A run directory written by an earlier dlrun (tests/data/old-run-sine-bp: 20 epochs, then
resumed to 30) can still be resumed, reported and rerun: the layout and the checkpoint format
are a contract with every run a user already has on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dlrun.commands import rerun
from dlrun.rundir.summary import shortest
from dlrun.sweeps import report
from tests.conftest import call_main

OLD = Path(__file__).parents[1] / "data" / "old-run-sine-bp"


@pytest.fixture
def old_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the old run at the relative path it was made with (its records name it)."""
    monkeypatch.chdir(tmp_path)
    copy = Path("tests/data/old-run-sine-bp")
    shutil.copytree(OLD, copy)
    return copy


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_old_run_resumes(dlrun, old_run: Path) -> None:
    before = _rows(old_run)
    # made on the CPU, and continued there: exact resume is the CPU's promise (docs/resume.md)
    result = dlrun(f"resume={old_run}", "trainer.epochs=40", "device=cpu")
    assert result.code == 0, result.err
    assert result.run_dir.resolve() == old_run.resolve()
    rows = _rows(old_run)
    assert rows[: len(before)] == before  # what was recorded stays
    assert [(r["epoch"], r["split"]) for r in rows[len(before) :]] == [(40, "train"), (40, "val")]
    summary = json.loads((old_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == 40
    assert [r["epoch"] for r in summary["resumes"]] == [20, 30]
    assert summary["objective"] == shortest(rows[-1]["mse"])
    env = json.loads((old_run / "env.json").read_text())
    assert len(env["resumes"]) == 2


def test_old_run_reports(old_run: Path, capsys) -> None:
    code, out, err = call_main(report.main, capsys, old_run)
    assert code == 0, err
    assert "completed" in out and "30/30" in out
    summary = json.loads((old_run / "summary.json").read_text())
    assert f"{summary['objective']:.4g}" in out


def test_old_run_reruns_and_verifies(old_run: Path, capsys) -> None:
    """The old code trained sine-bp's SGD steps with the bias added after each product, the
    current one inside it: the rerun rounds differently (sine-bp's rate of 0.3 grows the
    difference to about 1e-4 by epoch 30), says why, and matches within a tolerance."""
    again = ("--verify", "device=cpu", "hydra.run.dir=again")  # rerun where it ran: the CPU
    code, out, err = call_main(rerun.main, capsys, old_run, *again)
    assert code == 1, out + err
    assert "NOT reproduced" in out
    assert "note: the source ran other software (git commit 8d4d6a6" in out and "--rtol" in out
    args = ("--verify", "--rtol", "1e-3", "device=cpu", "hydra.run.dir=again2")
    code, out, err = call_main(rerun.main, capsys, old_run, *args)
    assert code == 0, out + err
    assert "reproduced: 6 rows of metrics.jsonl match within relative tolerance 0.001" in out
    assert _rows(Path("again2"))[-1]["mse"] == pytest.approx(_rows(old_run)[-1]["mse"], rel=1e-3)
