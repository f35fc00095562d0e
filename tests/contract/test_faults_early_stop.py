"""Ctrl-C in the first seconds, before a run wrote its summary: a single run or a sweep's jobs end
`interrupted` or `pending`, or leave nothing they made; never a directory with only Hydra's record
and a lock, shown as `unknown` (docs/faults.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rundir.test_writers import start, stop, wait_for

QUIET = ("task=sine-bp", "trainer.epochs=200000", "trainer.plots=false", "trainer.progress=false")


def test_ctrl_c_before_the_first_record_leaves_nothing_behind(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(*QUIET, f"hydra.run.dir={run}", cwd=tmp_path)
    wait_for(lambda: (run / ".hydra" / "config.yaml").is_file(), proc, timeout=60)
    if (run / "summary.json").exists():
        pytest.skip("the run wrote its summary before the signal could be sent")
    code, _, err = stop(proc, signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err
    if run.exists():  # the signal came late: then the run says how it ended
        assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_ctrl_c_early_in_a_joblib_sweep_leaves_no_unknown_jobs(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sw"
    args = ("-m", *QUIET, "seed=1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun", *args, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job is
    )
    wait_for(lambda: (sweep / "0" / ".hydra" / "config.yaml").is_file(), proc, timeout=120)
    if (sweep / "0" / "summary.json").exists():
        pytest.skip("the first job wrote its summary before the signal could be sent")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: to the whole group, workers too
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    manifest = json.loads((sweep / "sweep.json").read_text())
    statuses = {entry["dir"]: entry["status"] for entry in manifest["jobs"]}
    assert set(statuses.values()) <= {"interrupted", "pending", "completed"}, statuses
    for job in sweep.iterdir():
        # a worker may still make a job's empty directory as the pool stops: nothing in it
        if job.is_dir() and any(job.iterdir()):
            assert (job / "summary.json").is_file(), sorted(p.name for p in job.iterdir())
