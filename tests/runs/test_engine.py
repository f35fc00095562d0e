"""A Run built from config dataclasses and plain values, with no Hydra app: its stages train,
write the run directory through rundir, and a resume continues exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dlrun.config import schema
from dlrun.config.optimizers import SGDConfig
from dlrun.config.trainer import TrainerConfig
from dlrun.engine import distributed
from dlrun.errors import DlrunError
from dlrun.rundir import layout as rundir
from dlrun.rundir.layout import RunDir
from dlrun.rundir.records import Damaged
from dlrun.rundir.summary import Summary, shortest
from dlrun.runs.info import RunInfo
from dlrun.runs.stages import Run
from dlrun.tasks.sine_bp import SineBPConfig


def sine_config(epochs: int, resume: str | None = None) -> schema.Config:
    trainer = TrainerConfig(
        epochs=epochs,
        batch_size=100,
        shuffle=True,
        validate_every=5,
        log_every=1,
        checkpoint_every=5,
        progress=False,
        plots=False,
    )
    return schema.Config(
        task=SineBPConfig(),
        optimizer=SGDConfig(lr=0.3),
        trainer=trainer,
        device="cpu",
        seed=3,
        resume=resume,
    )


def run(config: schema.Config, run_dir: Path) -> float | None:
    plain = schema.plain(OmegaConf.structured(config))
    info = RunInfo(run_dir, choices={"task": "sine-bp", "optimizer": "sgd"}, overrides=["x=1"])
    return Run(config, plain, info, distributed.Strategy()).main()


def _timeless(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def test_a_run_without_hydra_trains_and_resumes_exactly(tmp_path: Path) -> None:
    whole = RunDir(tmp_path / "whole")
    objective = run(sine_config(20), whole.path)

    rows = whole.read_metrics()
    train = [r["loss"] for r in rows if r["split"] == "train"]
    assert len(train) == 20 and train[-1] < train[0] / 2  # it learned
    summary = whole.read_summary()
    assert summary is not None and summary.status == "completed"
    assert summary.epochs_completed == 20 and summary.overrides == ["x=1"]
    assert summary.objective == objective == shortest(rows[-1]["mse"])  # float32, shortest
    assert summary.objective_name == "mse" and summary.device == "cpu"
    assert whole.last.is_file() and whole.best.is_file() and whole.env.is_file()
    assert json.loads(whole.summary.read_text()).keys() == Summary().to_json().keys()

    part = RunDir(tmp_path / "part")
    run(sine_config(10), part.path)
    assert part.read_summary().epochs_completed == 10
    run(sine_config(20, resume=str(part.path)), part.path)

    assert _timeless(part.read_metrics()) == _timeless(rows)
    a = torch.load(whole.last, weights_only=True)
    b = torch.load(part.last, weights_only=True)
    assert a["epoch"] == b["epoch"] == 20
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    resumed = part.read_summary()
    assert [r["epoch"] for r in resumed.resumes] == [10]
    assert resumed.objective == objective
    assert len(part.read_env()["resumes"]) == 1


def test_a_refused_resume_changes_no_record(tmp_path: Path) -> None:
    done = RunDir(tmp_path / "done")
    run(sine_config(5), done.path)
    before = {p: p.read_bytes() for p in (done.summary, done.metrics, done.env, done.last)}
    with pytest.raises(DlrunError, match="trainer.epochs=2 is below the checkpoint's epoch 5"):
        run(sine_config(2, resume=str(done.path)), done.path)
    assert {p: p.read_bytes() for p in before} == before


def test_summary_round_trips_and_tolerates_old_and_unknown_keys(tmp_path: Path) -> None:
    summary = Summary(task="t", status="completed", epochs_completed=3, final={"loss": 1.0})
    summary.describe_task("cpu", "loss", False)
    summary.record_metrics({"epoch": 3, "loss": 0.5}, {"epoch": 2, "loss": 0.4})
    run_dir = RunDir(tmp_path)
    run_dir.write_summary(summary)
    assert run_dir.read_summary() == summary
    assert summary.objective == 0.5 and "exit_code" not in json.loads(run_dir.summary.read_text())
    run_dir.summary.write_text(json.dumps({"status": "failed", "later_key": 1, "best": None}))
    old = run_dir.read_summary()
    assert old == dataclasses.replace(Summary(), status="failed")
    run_dir.summary.write_text("{cut sh")  # damage is said, not read as "no summary"
    with pytest.raises(Damaged, match="summary.json: damaged \\(not JSON"):
        run_dir.read_summary()


@pytest.mark.parametrize(
    ("text", "rows", "bad_line"),
    [
        ('{"epoch": 1, "split": "train", "loss": 2.0}\n{"epoch": 2, "spl', 1, None),
        ('{"epoch": 1, "split": "train"}\n{"epoch": 2, "split": "val"}\n', 2, None),
        ('{"epoch": 1, "split": "train"}\ngarbage\n{"epoch": 2, "split": "val"}\n', 0, 2),
        ('{"epoch": 1, "split": "train"}\n{"epoch": 2, "split": "val"}\n[]\n', 0, 3),
    ],
    ids=["cut short at the end", "whole", "damaged inside", "not a row"],
)
def test_one_policy_for_a_damaged_metrics_line(
    tmp_path: Path, text: str, rows: int, bad_line: int | None
) -> None:
    path = tmp_path / rundir.METRICS
    path.write_text(text)
    if bad_line is None:
        assert len(RunDir(tmp_path).read_metrics()) == rows
    else:
        with pytest.raises(DlrunError, match=rf"{rundir.METRICS}: line {bad_line} is not"):
            RunDir(tmp_path).read_metrics()
