"""MLflow as its users read it: a run named by what sets it apart, MLflow's standard context
tags, params of the values in use, float32 values at their shortest form, where to look printed
at the end, and no epoch lost when a run's process dies and the run is resumed. Read back from
a real SQLite store with MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from dlrun.rundir.summary import shortest  # noqa: E402
from dlrun.tracking import mlflow_run as tracking  # noqa: E402
from dlrun.tracking.mlflow_logger import MLflowConfig  # noqa: E402


def test_the_command_names_the_run_and_says_where_it_is(dlrun, tmp_path: Path) -> None:
    r = dlrun(
        "task=fizzbuzz",
        "optimizer.lr=0.1",
        "seed=1",
        "trainer.epochs=3",
        "trainer.validate_every=1",
        "trainer.plots=false",
        "device=cpu",
        "logger=[jsonl,mlflow]",
    )
    assert r.code == 0, r.err
    name = r.summary()["name"]
    assert name == "fizzbuzz lr=0.1 seed=1 epochs=3 validate_every=1"
    assert f"run: {name}" in r.out  # the console's header says the same name
    run_id = tracking.run_id(r.run_dir)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    got = client.get_run(run_id)
    assert got.info.run_name == name
    experiment = client.get_experiment(got.info.experiment_id)  # opens on its runs table
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    tags = got.data.tags
    # MLflow's own context tags: the UI's "Created by" and "Source"
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"]
    params = got.data.params
    assert "None" not in params.values() and "resume" not in params
    assert not any(k.startswith("logger.") and v == "False" for k, v in params.items())
    assert params["logger.mlflow.tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert params["logger.mlflow.experiment"] == "fizzbuzz"
    # float32 noise stays out: the stored accuracy is the summary's, shortest form
    accuracy = client.get_metric_history(run_id, "val/accuracy")[-1].value
    last_val = [m for m in r.metrics() if m["split"] == "val"][-1]
    assert accuracy == shortest(last_val["accuracy"]) == r.summary()["final"]["accuracy"]
    assert len(repr(r.summary()["final"]["loss"])) <= 12  # e.g. 1.1871, not 1.187099933624
    # the closing lines say where the run is in MLflow
    closing = r.out[r.out.index("mlflow: run") :]
    assert run_id in closing and "mlflow ui --backend-store-uri sqlite:///" in closing
    assert f"#/experiments/{got.info.experiment_id}/runs/{run_id}" in closing


def _rows(first: int, last: int) -> list[dict]:
    out = []
    for e in range(first, last + 1):
        out.append({"epoch": e, "split": "train", "loss": 1.0 / e, "time_s": 0.01})
        out.append({"epoch": e, "split": "val", "loss": 2.0 / e, "accuracy": 0.1 * e})
    return out


def test_a_resume_sends_what_a_killed_process_never_sent(tmp_path: Path) -> None:
    """The run's process dies (its pipe to the store's process closes without an end) while the
    last checkpointed epoch's rows are still waiting to go; the resume sends them."""
    d = tmp_path / "run"
    d.mkdir()
    settings = MLflowConfig(enabled=True, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")

    def start(resume_epoch: int | None) -> tracking.MlflowRun:
        return tracking.MlflowRun(
            settings, d, {}, {}, experiment="sine-bp", resume_epoch=resume_epoch
        )

    first = start(None)
    rows = _rows(1, 4)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for row in rows:
        first.append(row)
    assert first._proc is not None and first._proc.stdin is not None
    first._proc.stdin.close()  # as if killed with kill -9: no end, epoch 4 never sent
    first._proc.wait(timeout=120)
    client = MlflowClient(settings.tracking_uri)
    run_id = tracking.run_id(d)
    steps = {m.step for m in client.get_metric_history(run_id, "val/accuracy")}
    assert steps == {1, 2, 3}  # what was lost
    assert client.get_run(run_id).info.status == "FAILED"

    again = start(4)  # resume=<d> from last.pt at epoch 4
    more = _rows(5, 6)
    with open(d / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in more)
    for row in more:
        again.append(row)
    again.finish("completed")
    assert again.error is None and again.run_id == run_id
    for key in ("train/loss", "val/loss", "val/accuracy", "train/time_s"):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6], key  # each epoch once
    values = {m.step: m.value for m in client.get_metric_history(run_id, "val/accuracy")}
    assert values[4] == shortest(0.4) and client.get_run(run_id).info.status == "FINISHED"
