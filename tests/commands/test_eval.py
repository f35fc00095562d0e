"""dlrun-eval: a checkpoint scored by its task's evaluate() equals what the run recorded, other
data of the same shape is scored as an independent computation scores it, and the run directory
is only read (but for the evaluation's own record)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlrun.commands import evaluate as evaluation
from dlrun.rundir.lock import NAME as LOCK
from tests.conftest import call_main
from tests.tasks.test_housing import linear_data, task_for, write_csv

QUIET = ("trainer.plots=false", "trainer.progress=false", "device=cpu")


def files_of(run_dir: Path) -> dict[str, str]:
    """Every file of a run directory but its eval/ records and the writer's lock file (each
    writer, dlrun-eval too, names itself there), by content."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.relative_to(run_dir).parts[0] not in ("eval", LOCK)
    }


def eval_cli(capsys, *args: object) -> tuple[int, str, str]:
    return call_main(evaluation.main, capsys, *args)


def the_record(run_dir: Path) -> dict:
    records = sorted((run_dir / "eval").glob("*.json"))
    assert len(records) == 1, records
    return json.loads(records[0].read_text())


def test_best_checkpoint_scores_the_recorded_best_metrics(dlrun, capsys) -> None:
    r = dlrun("task=sine-bp", "trainer.epochs=300", "trainer.validate_every=50", *QUIET)
    assert r.code == 0, r.err
    summary = r.summary()
    before = files_of(r.run_dir)

    code, out, err = eval_cli(capsys, r.run_dir)

    assert code == 0, err
    best = {k: v for k, v in summary["best"].items() if k != "epoch"}
    record = the_record(r.run_dir)
    assert record["metrics"] == best  # exactly: the same model, data and computation
    assert record["epoch"] == summary["best"]["epoch"]
    assert record["checkpoint"] == str(r.run_dir / "checkpoints" / "best.pt")
    assert record["overrides"] == [] and record["task"] == "sine-bp"
    assert "mse" in out and f"{best['mse']:.4g}" in out  # the table
    assert files_of(r.run_dir) == before  # nothing else in the run changed


def test_last_checkpoint_scores_the_final_metrics(dlrun, capsys) -> None:
    r = dlrun("task=sine-bp", "trainer.epochs=120", "trainer.validate_every=40", *QUIET)
    assert r.code == 0, r.err

    code, _, err = eval_cli(capsys, r.run_dir, "device=cpu", "--checkpoint", "last")

    assert code == 0, err
    final = {k: v for k, v in r.summary()["final"].items() if k != "epoch"}
    record = the_record(r.run_dir)
    assert record["metrics"] == final and record["epoch"] == 120
    assert record["checkpoint"].endswith("last.pt") and record["overrides"] == ["device=cpu"]


@pytest.mark.slow
def test_housing_model_scored_on_its_own_csv_then_on_another(dlrun, tmp_path, capsys) -> None:
    from sklearn.metrics import mean_squared_error

    own = write_csv(tmp_path / "own.csv", *linear_data(600, seed=1))
    other = write_csv(tmp_path / "other.csv", *linear_data(400, seed=2))
    r = dlrun("task=housing-regression", f"data.path={own}", "seed=3", "trainer.epochs=8", *QUIET)
    assert r.code == 0, r.err

    assert eval_cli(capsys, r.run_dir)[0] == 0
    first = the_record(r.run_dir)
    assert first["metrics"] == {k: v for k, v in r.summary()["best"].items() if k != "epoch"}

    code, out, err = eval_cli(capsys, r.run_dir, f"data.path={other}")

    assert code == 0, err
    records = sorted((r.run_dir / "eval").glob("*.json"))
    second = json.loads(records[-1].read_text())
    assert len(records) == 2 and second["overrides"] == [f"data.path={other}"]
    # the oracle: the same weights on the other CSV's test split (as a run on it splits it),
    # scored by scikit-learn
    state = torch.load(r.run_dir / "checkpoints" / "best.pt", weights_only=True)
    w, b = state["model"]["weight"].double().numpy(), state["model"]["bias"].double().numpy()
    task = task_for(3, path=str(other))
    x, y = task.x_test.double().numpy(), task.y_test.double().numpy()
    expected = mean_squared_error(y, x @ w.T + b)
    assert second["metrics"]["mse"] == pytest.approx(expected, rel=1e-5)
    assert second["metrics"]["mse"] != first["metrics"]["mse"]


def test_a_checkpoint_outside_a_run_is_scored_without_a_record(dlrun, tmp_path, capsys) -> None:
    r = dlrun("task=sine-bp", "trainer.epochs=50", "trainer.validate_every=50", *QUIET)
    assert r.code == 0, r.err
    loose = tmp_path / "loose.pt"
    loose.write_bytes((r.run_dir / "checkpoints" / "best.pt").read_bytes())

    code, out, err = eval_cli(capsys, loose, "device=cpu")

    assert code == 0, err
    assert "no record written" in out
    assert f"{r.summary()['best']['mse']:.4g}" in out
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_mnist_model_scored_on_another_data_set_by_name(dlrun, tmp_path, capsys) -> None:
    from tests.tasks.test_mnist import write_data_set

    root = tmp_path / "data"
    write_data_set(root, "MNIST", n_train=120, n_test=30)
    write_data_set(root, "FashionMNIST", n_train=120, n_test=12)  # another test split
    r = dlrun(
        "task=mnist-mlp", f"data.root={root}", "data.download=false", "trainer.epochs=3", *QUIET
    )
    assert r.code == 0, r.err

    assert eval_cli(capsys, r.run_dir)[0] == 0
    own = the_record(r.run_dir)["metrics"]
    code, _, err = eval_cli(capsys, r.run_dir, "data.name=FashionMNIST")

    assert code == 0, err
    assert own == {k: v for k, v in r.summary()["best"].items() if k != "epoch"}
    records = sorted((r.run_dir / "eval").glob("*.json"))
    other = json.loads(records[-1].read_text())["metrics"]
    # scored on the 12 images of the other data set, not the run's 30
    assert other["accuracy"] == pytest.approx(other["correct"] / 12)
    assert own["accuracy"] == pytest.approx(own["correct"] / 30)


def test_a_run_with_its_own_configs_needs_them_again(dlrun, tmp_path, capsys) -> None:
    mine = tmp_path / "mine"
    (mine / "task").mkdir(parents=True)
    (mine / "task" / "sine-small.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - /schema/task@task: sine-bp\n  - override /optimizer: sgd\n  - _self_\n"
        "task:\n  hidden: 7\ntrainer:\n  epochs: 40\n  validate_every: 20\n"
    )
    r = dlrun("--config-dir", str(mine), "task=sine-small", *QUIET)
    assert r.code == 0, r.err

    code, _, err = eval_cli(capsys, r.run_dir)
    assert code == 2 and "task/sine-small" in err and "--config-dir DIR" in err
    code, _, err = eval_cli(capsys, r.run_dir, "--config-dir", mine)

    assert code == 0, err
    best = {k: v for k, v in r.summary()["best"].items() if k != "epoch"}
    assert the_record(r.run_dir)["metrics"] == best


def test_eval_of_a_run_another_process_writes_is_refused_before_any_work(dlrun, capsys) -> None:
    from tests.rundir.test_writers import HOLD

    r = dlrun("task=sine-bp", "trainer.epochs=20", *QUIET)
    assert r.code == 0, r.err
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(r.run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, out, err = eval_cli(capsys, r.run_dir)
        assert code == 2 and f"being written by pid {holder.pid}" in err
        assert len(err.strip().splitlines()) == 1 and "mse" not in out  # nothing scored
        assert not (r.run_dir / "eval").exists()
    finally:
        holder.kill()
        holder.wait()
