"""The store opens while the run sets up: the command starts the MLflow worker before torch's
import (dlrun.tracking.early), the run takes it over, and nothing is lost on the way; a slow
store at the run's end is said once. Read back from a real SQLite store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from dlrun.tracking import early as tracking_early  # noqa: E402
from dlrun.tracking import mlflow_run as tracking  # noqa: E402
from dlrun.tracking.mlflow_logger import MLflowConfig  # noqa: E402


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as c:
        return {r[0] for r in c.execute("select name from sqlite_master where type='table'")}


def test_the_command_hands_the_early_worker_to_the_run(
    dlrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tracking_early.Early] = []
    start = tracking_early.start
    monkeypatch.setattr(
        tracking_early, "start", lambda uri: started.append(start(uri)) or started[-1]
    )
    r = dlrun("task=fizzbuzz", "trainer.epochs=20", "device=cpu", "logger=[jsonl,mlflow]")
    assert r.code == 0, r.err
    [early] = started  # one worker, started by the command and taken over by the run
    assert early.taken and early.proc.wait(timeout=60) == 0
    run_id = tracking.run_id(r.run_dir)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FINISHED"
    for split in ("train", "val"):  # every row of metrics.jsonl reached the store
        epochs = [m["epoch"] for m in r.metrics() if m["split"] == split]
        stored = client.get_metric_history(run_id, f"{split}/loss")
        assert sorted(m.step for m in stored) == epochs
    # the worker's own log, which starts before the run names its directory, is the run's
    log = (r.run_dir / "dlrun.log").read_text()
    assert f"[dlrun.mlflow][INFO] - MLflow run {run_id} ended FINISHED" in log


def test_an_early_worker_makes_the_store_and_an_unused_one_exits(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    other = tracking_early.start(f"sqlite:///{db}")
    assert other.new_store
    assert other.take(f"sqlite:///{tmp_path / 'other.db'}") is None  # another store: let go
    assert other.released and other.proc.wait(timeout=120) == 0
    early = tracking_early.start(f"sqlite:///{db}")
    assert not early.new_store  # the first worker made it
    early.release()  # the run never reached its loop
    assert early.proc.wait(timeout=120) == 0
    assert {"experiments", "runs", "metrics", "alembic_version"} <= tables(db)


def test_a_slow_store_at_the_end_is_said_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tracking, "SLOW_S", 0.0)  # any wait counts as slow
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = tracking.MlflowRun(
        MLflowConfig(enabled=True, tracking_uri=uri), tmp_path / "run", {}, {}, experiment="x"
    )
    run.append({"epoch": 1, "split": "val", "loss": 0.5})
    said: list[str] = []
    run.finish("completed", said.append)
    assert said == [f"mlflow: creating the store {uri} (MLflow sets up a new database once)"]
    assert run.error is None
    assert MlflowClient(uri).get_metric_history(run.run_id, "val/loss")[0].value == 0.5
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"] == run.run_id
