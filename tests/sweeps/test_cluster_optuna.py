"""An Optuna study in a database (a SQLite file) shared by several `dlrun -m` processes: each
takes new trials from it, a killed one loses no finished trial (its trial in progress is run
again, from its last.pt, by the next process), and running the command again continues the
study up to its trial budget and no further."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="needs dlrun[sweep] (Optuna)")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs dlrun[sweep]")
sqlalchemy = pytest.importorskip("sqlalchemy", reason="needs dlrun[sweep] (SQLAlchemy)")
if optuna.__version__.startswith("2.") and not sqlalchemy.__version__.startswith("1."):
    pytest.skip(
        f"Optuna {optuna.__version__} (hydra-optuna-sweeper needs Optuna 2) stores a study only "
        f"with SQLAlchemy<2, and this environment has {sqlalchemy.__version__} (MLflow 3 needs "
        "2): .ci/clusters.sh runs this test with SQLAlchemy 1.4 first on the path",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow


def search(study: Path, sweep: Path, n_trials: int) -> tuple[str, ...]:
    return (
        "-m",
        "hparams_search=fizzbuzz_optuna",
        f"hydra.sweeper.storage=sqlite:///{study}",
        "hydra.sweeper.study_name=shared",
        f"hydra.sweeper.n_trials={n_trials}",
        "device=cpu",
        "trainer.epochs=300",  # a trial of seconds: the test kills a process during one
        "trainer.checkpoint_every=1",
        "trainer.validate_every=1",
        "trainer.log_every=1",
        "trainer.plots=false",
        f"hydra.sweep.dir={sweep}",
    )


def start(args: tuple[str, ...], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def launched(out: str) -> set[int]:
    """The job numbers a process launched (Hydra's `#N : overrides` lines)."""
    return {int(n) for n in re.findall(r"\]\s+#(\d+) : ", out)}


def epochs_logged(job_dir: Path) -> int:
    path = job_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return max((json.loads(line)["epoch"] for line in lines[:-1]), default=0)


def test_processes_share_one_study_survive_a_kill_and_stop_at_the_budget(tmp_path: Path) -> None:
    db, sweep = tmp_path / "study.db", tmp_path / "sweep"
    storage = f"sqlite:///{db}"

    # one process: trial 0 finishes, then the process is killed (SIGKILL) during trial 1
    first = start(search(db, sweep, 6), tmp_path)
    end = time.monotonic() + 240
    while epochs_logged(sweep / "1") < 3:
        assert first.poll() is None and time.monotonic() < end, first.stdout.read()[-3000:]
        time.sleep(0.2)
    first.kill()
    first.wait()
    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    kept = (sweep / "0/summary.json").stat().st_mtime_ns

    # two processes at once: one runs the dead process's trial 1 again, both ask for new trials
    both = [start(search(db, sweep, 6), tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], [o[-3000:] for o in outs]
    ran = [launched(o) - {1} for o in outs]
    assert all(ran) and not ran[0] & ran[1], ran  # both took trials, none twice
    assert ran[0] | ran[1] == {2, 3, 4, 5}

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), trials
    for t in trials:  # each trial's job in the directory of its number, its value recorded
        summary = json.loads((sweep / str(t.number) / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert summary["objective"] == pytest.approx(t.value)
        assert f"optimizer.lr={t.params['optimizer.lr']}" in summary["overrides"]
    assert (sweep / "0/summary.json").stat().st_mtime_ns == kept  # not run again
    resumed = json.loads((sweep / "1/summary.json").read_text())
    assert resumed["resumes"] and resumed["resumes"][0]["epoch"] >= 2  # from its last.pt

    # the same command again: the budget is spent, nothing runs
    again = start(search(db, sweep, 6), tmp_path)
    out = again.communicate(timeout=200)[0]
    assert again.returncode == 0, out[-3000:]
    assert launched(out) == set()
    assert len(optuna.load_study(study_name="shared", storage=storage).get_trials()) == 6
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in best

    # a bigger budget continues the same study
    more = start(search(db, sweep, 7), tmp_path)
    out = more.communicate(timeout=200)[0]
    assert more.returncode == 0 and launched(out) == {6}, out[-3000:]

    csv = tmp_path / "trials.csv"
    report = subprocess.run(
        [sys.executable, "-m", "dlrun.sweeps.report", str(sweep), "--no-group", "--csv", str(csv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0 and "7 runs in" in report.stdout, report.stderr
    rows = csv.read_text().splitlines()
    assert len(rows) == 8 and sum(",completed," in r for r in rows) == 7, rows
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["counts"] == {"completed": 7}
    # every process drew its own trials: no configuration was tried twice
    lrs = {t.params["optimizer.lr"] for t in optuna.load_study("shared", storage).get_trials()}
    assert len(lrs) == 7
