"""Sweeps (-m): failed jobs are recorded, sweep.json lists every job, a re-run resumes; launcher
and Optuna presets run for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dlrun import tasks
from tests.conftest import run_cli

FAST = ("task=sine-bp", "trainer.epochs=3", "trainer.plots=false", "trainer.progress=false")
CONF = Path(__file__).resolve().parents[2] / "conf"


def manifest(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "sweep.json").read_text())


def summary(job_dir: Path) -> dict:
    return json.loads((job_dir / "summary.json").read_text())


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path, dlrun) -> None:
    sweep_dir = tmp_path / "sweep"
    res = dlrun("-m", *FAST, "optimizer.lr=0.1,-1,0.2", f"hydra.sweep.dir={sweep_dir}")
    assert res.code == 2
    assert "1 of 3 jobs failed" in res.err and "optimizer.lr" in res.err
    assert res.err.count("\n") == 2  # the job's line as it failed, then the sweep's verdict
    assert "job 1 failed: optimizer.lr=-1.0 is not allowed" in res.err

    failed = summary(sweep_dir / "1")
    assert failed["status"] == "failed"
    assert "optimizer.lr" in failed["error"]
    assert "optimizer.lr=-1" in failed["overrides"]
    for job in ("0", "2"):
        assert summary(sweep_dir / job)["status"] == "completed"
        assert (sweep_dir / job / "checkpoints" / "last.pt").is_file()

    m = manifest(sweep_dir)
    assert [j["status"] for j in m["jobs"]] == ["completed", "failed", "completed"]
    assert [next(o for o in j["overrides"] if "lr" in o) for j in m["jobs"]] == [
        "optimizer.lr=0.1",
        "optimizer.lr=-1",
        "optimizer.lr=0.2",
    ]
    assert m["counts"] == {"completed": 2, "failed": 1}
    assert len(m["planned"]) == 3

    # the same sweep again: completed jobs are skipped untouched, the failed one is retried
    before = {j: (sweep_dir / j / "metrics.jsonl").stat().st_mtime_ns for j in ("0", "2")}
    again = dlrun("-m", *FAST, "optimizer.lr=0.1,-1,0.2", f"hydra.sweep.dir={sweep_dir}")
    assert again.code == 2
    assert again.out.count("completed earlier, skipped") == 2
    after = {j: (sweep_dir / j / "metrics.jsonl").stat().st_mtime_ns for j in ("0", "2")}
    assert before == after


def test_a_changed_sweep_does_not_overwrite_another_sweeps_jobs(tmp_path: Path, dlrun) -> None:
    sweep_dir = tmp_path / "sweep"
    assert dlrun("-m", *FAST, "seed=1,2", f"hydra.sweep.dir={sweep_dir}").code == 0
    before = {
        p: p.read_bytes()
        for p in sorted(sweep_dir.rglob("*"))
        if p.is_file() and p.name != ".dlrun.lock"
    }
    res = dlrun("-m", *FAST, "seed=5,6", f"hydra.sweep.dir={sweep_dir}")
    assert res.code == 2
    assert "holds a job with other overrides" in res.err and "new hydra.sweep.dir" in res.err
    assert res.err.count("\n") == 1 and "completed" not in res.out  # refused before any job
    # nothing of the first sweep changed: summaries, .hydra/ records, multirun.yaml
    after = {
        p: p.read_bytes()
        for p in sorted(sweep_dir.rglob("*"))
        if p.is_file() and p.name != ".dlrun.lock"
    }
    assert after == before


def test_an_interrupted_sweep_continues_where_it_stopped(tmp_path: Path, dlrun) -> None:
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "task=sine-bp",
        "trainer.epochs=20000",
        "trainer.log_every=100",
        "trainer.validate_every=1000",
        "trainer.checkpoint_every=0",
        "trainer.plots=false",
        "trainer.progress=false",
        "seed=1,2,3",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows = sweep_dir / "1" / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and (not rows.exists() or not rows.read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"hydra.sweep.dir={sweep_dir}" in err and "continue it with: dlrun -m" in err

    m = manifest(sweep_dir)
    assert [j["status"] for j in m["jobs"]] == ["completed", "interrupted", "pending"]
    stopped_at = summary(sweep_dir / "1")["epochs_completed"]
    assert 0 < stopped_at < 20000
    done_mtime = (sweep_dir / "0" / "metrics.jsonl").stat().st_mtime_ns

    res = dlrun(*args)
    assert res.code == 0, res.err
    assert res.out.count("completed earlier, skipped") == 1
    assert (
        f"resumed from {sweep_dir / '1' / 'checkpoints' / 'last.pt'} at epoch {stopped_at}"
        in res.out
    )
    assert (sweep_dir / "0" / "metrics.jsonl").stat().st_mtime_ns == done_mtime
    resumed = summary(sweep_dir / "1")
    assert resumed["status"] == "completed" and resumed["epochs_completed"] == 20000
    assert [r["epoch"] for r in resumed["resumes"]] == [stopped_at]
    assert manifest(sweep_dir)["counts"] == {"completed": 3}

    # a job continued on its own (resume=) is reflected in the manifest too
    extended = dlrun(f"resume={sweep_dir / '2'}", "trainer.epochs=20100")
    assert extended.code == 0, extended.err
    entry = next(j for j in manifest(sweep_dir)["jobs"] if j["job"] == "2")
    assert entry["epochs_completed"] == 20100


@pytest.mark.parametrize(
    "launcher",
    [("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), ("hydra/launcher=submitit_local",)],
    ids=["joblib", "submitit_local"],
)
def test_launcher_presets_run_every_job(tmp_path: Path, launcher: tuple[str, ...]) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        "-m", *launcher, *FAST, "optimizer.lr=0.1,-1", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path
    )
    # jobs ran in other processes: the verdict comes from their records
    assert proc.returncode == 2, proc.stderr
    assert "1 of 2 jobs failed" in proc.stderr
    m = manifest(sweep_dir)
    assert [j["status"] for j in m["jobs"]] == ["completed", "failed"]
    assert summary(sweep_dir / "0")["final"]["mse"] > 0


def test_slurm_preset_has_cluster_defaults(tmp_path: Path) -> None:
    proc = run_cli("hydra/launcher=slurm", "--cfg", "hydra", "-p", "hydra.launcher", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    launcher = OmegaConf.create(proc.stdout)
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1
    assert launcher.timeout_min > 0 and launcher.max_num_timeout > 0


def test_optuna_search_writes_the_best_trial(tmp_path: Path, dlrun) -> None:
    sweep_dir = tmp_path / "sweep"
    res = dlrun(
        "-m",
        "hparams_search=fizzbuzz_optuna",
        "hydra.sweeper.n_trials=3",
        "trainer.epochs=20",
        "trainer.plots=false",
        "trainer.progress=false",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert res.code == 0, res.err
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    jobs = manifest(sweep_dir)["jobs"]
    assert len(jobs) == 3 and all(j["status"] == "completed" for j in jobs)
    assert best.best_value == pytest.approx(max(j["objective"] for j in jobs))
    winner = max(jobs, key=lambda j: j["objective"])
    assert f"optimizer.lr={best.best_params['optimizer.lr']}" in winner["overrides"]


def test_optuna_searches_the_schedules_settings(tmp_path: Path, dlrun) -> None:
    """The schedule preset: each trial a cosine schedule with the settings Optuna drew."""
    sweep_dir = tmp_path / "sweep"
    res = dlrun(
        "-m",
        "hparams_search=fizzbuzz_schedule_optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.epochs=120",
        "trainer.plots=false",
        "trainer.progress=false",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert res.code == 0, res.err
    jobs = manifest(sweep_dir)["jobs"]
    assert len(jobs) == 2 and all(j["status"] == "completed" for j in jobs)
    for job in jobs:
        drawn = dict(o.split("=", 1) for o in job["overrides"])
        lines = (sweep_dir / job["dir"] / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(x) for x in lines]
        rates = [r["lr"] for r in rows if r["split"] == "train"]
        assert rates[-1] < float(drawn["optimizer.lr"])  # the cosine brought it down


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml")))
def test_optuna_presets_follow_their_tasks_objective(preset: str) -> None:
    conf = OmegaConf.load(CONF / "hparams_search" / f"{preset}.yaml")
    task = next(d["override /task"] for d in conf.defaults if "override /task" in d)
    name = {"mnist": "mnist-mlp"}.get(task, task)  # task=mnist is mnist-mlp's alias
    maximize = tasks.task_class(name).maximize
    assert conf.hydra.sweeper.direction == ("maximize" if maximize else "minimize")


@pytest.mark.parametrize(
    ("module", "choice", "extra"),
    [
        ("hydra_joblib_launcher", "hydra/launcher=joblib", "sweep"),
        ("hydra_submitit_launcher", "hydra/launcher=slurm", "slurm"),
        ("hydra_ray_launcher", "hydra/launcher=ray", "ray"),
        ("hydra_optuna_sweeper", "hparams_search=fizzbuzz_optuna", "sweep"),
    ],
)
def test_a_missing_plugin_names_the_extra(
    tmp_path: Path, module: str, choice: str, extra: str
) -> None:
    code = (
        f"import sys; sys.modules['hydra_plugins.{module}'] = None\n"
        f"from dlrun.cli.main import main; main(['-m', '{choice}', 'trainer.epochs=1'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"pip install 'dlrun[{extra}]'" in proc.stderr
    assert not (tmp_path / "multirun").exists()


def test_a_sweep_refused_at_compose_time_leaves_nothing(tmp_path: Path, dlrun) -> None:
    res = dlrun("-m", "trainer.epochs=1", "trainer.batch_size=8,abc")
    assert res.code == 2 and "trainer.batch_size=abc" in res.err
    assert not (tmp_path / "multirun").exists()


def test_a_new_run_is_refused_in_a_used_run_directory(tmp_path: Path, dlrun) -> None:
    run_dir = tmp_path / "run"
    assert dlrun(*FAST, run_dir=run_dir).code == 0
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    res = dlrun(*FAST, "trainer.epochs=5", run_dir=run_dir)
    assert res.code == 2
    assert f"hydra.run.dir={run_dir} already holds a run; continue it with resume=" in res.err
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before
