"""The Python API: many calls in one process (a notebook's kernel), a mistake between them
raised as the CLI's own line, and nothing left behind for the next call."""

from __future__ import annotations

import logging
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra

import dlrun
from dlrun.cli import main as cli

QUIET = ("trainer.plots=false", "trainer.progress=false", "device=cpu")
SINE = ("task=sine-bp", "trainer.validate_every=50", "trainer.log_every=50", *QUIET)


def sine_mse(model: torch.nn.Module, points: int = 100, amplitude: float = 20.0) -> float:
    """The oracle: torch's own MSE of the model on the sine task's grid."""
    x = torch.arange(points, dtype=torch.float32)[:, None] / points
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(x), amplitude * torch.sin(2 * math.pi * x)).item()


def test_many_calls_in_one_process(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    argv, handlers = list(sys.argv), list(logging.getLogger().handlers)

    first = dlrun.run(*SINE, "trainer.epochs=300", run_dir=tmp_path / "a")
    with pytest.raises(dlrun.DlrunError) as refused:
        dlrun.run(*SINE, "optimizer.lr=-1")
    second = dlrun.run(*SINE, "trainer.epochs=200", "seed=1")  # Hydra's default directory
    resumed = dlrun.run(f"resume={first.run_dir}", "trainer.epochs=400")

    for result in (first, second, resumed):
        assert result.summary.status == "completed"
        train = [row["loss"] for row in result.metrics if row["split"] == "train"]
        assert train[-1] < 0.6 * train[0]  # it learned
    assert first.run_dir == tmp_path / "a" and resumed.run_dir == first.run_dir
    assert second.run_dir.parent.parent == tmp_path / "outputs"
    assert first.summary.epochs_completed == 400 and len(first.summary.resumes) == 1
    assert second.summary.seed == 1
    # the trained model predicts as the run recorded
    best = first.summary.best
    assert sine_mse(first.load_model()) == pytest.approx(best["mse"], rel=1e-5)
    assert sine_mse(first.load_model(which="last")) == pytest.approx(
        first.summary.final["mse"], rel=1e-5
    )
    # the mistake: the line the command prints, its exit code, no run directory left
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main([*SINE, "optimizer.lr=-1"])
    assert capsys.readouterr().err.strip() == f"dlrun: error: {refused.value}"
    assert refused.value.exit_code == 2 and "optimizer.lr=-1" in str(refused.value)
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1
    # nothing left behind: argv, Hydra's global state, the schemas, the root logger
    assert sys.argv == argv and logging.getLogger().handlers == handlers
    assert not GlobalHydra.instance().is_initialized()
    assert ConfigStore.instance().repo.get("dlrun_schema.yaml") is not None


def test_sweep_returns_every_job(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)

    jobs = dlrun.sweep(*SINE, "trainer.epochs=100", "seed=0,1,2", sweep_dir="sw")

    assert [j.run_dir for j in jobs] == [tmp_path / "sw" / str(n) for n in range(3)]
    assert [j.summary.seed for j in jobs] == [0, 1, 2]
    assert all(j.summary.status == "completed" for j in jobs)
    with pytest.raises(dlrun.DlrunError, match="task/nope"):
        dlrun.sweep("task=nope,sine-bp", sweep_dir="sw2")


def test_a_bad_which_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = dlrun.run(*SINE, "trainer.epochs=0", run_dir="r")
    with pytest.raises(dlrun.DlrunError, match="which='first': expected one of best, last"):
        result.load_model("first")


def test_import_dlrun_is_light() -> None:
    code = (
        "import sys, dlrun; dlrun.run, dlrun.sweep, dlrun.Result, dlrun.DlrunError; "
        "print(sorted(m for m in ('torch', 'hydra', 'omegaconf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_notebook_session_in_the_docs_runs(tmp_path: Path, monkeypatch) -> None:
    """docs/python-api.md's cells, run in order in one namespace, as a notebook runs them."""
    monkeypatch.chdir(tmp_path)
    page = (Path(__file__).resolve().parents[1] / "docs" / "python-api.md").read_text()
    cells = re.findall(r"^```python\n(.*?)^```", page, re.S | re.M)
    assert len(cells) >= 5
    namespace: dict = {}
    for cell in cells:
        exec(compile(cell, "docs/python-api.md", "exec"), namespace)
    assert namespace["longer"].summary.epochs_completed == 600
    assert [j.summary.status for j in namespace["jobs"]] == ["completed", "completed"]
