"""Ctrl-C and SIGTERM on a sweep under every launcher, with real signals and real launchers: each
running job ends `interrupted` with its latest epoch checkpointed, the parent waits for them, no
process is left behind, and the command that continues the sweep is printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

psutil = pytest.importorskip("psutil")

LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit": ["hydra/launcher=submitit_local"],
}
# epochs that never end on their own; no checkpoint but the one a stop writes
ENDLESS = [
    "task=sine-bp",
    "trainer.epochs=1000000",
    "trainer.log_every=1000",
    "trainer.validate_every=1000",
    "trainer.checkpoint_every=0",
    "trainer.plots=false",
    "trainer.progress=false",
]


def start(sweep_dir: Path, launcher: str, jobs: int) -> subprocess.Popen:
    seeds = ",".join(str(s) for s in range(1, jobs + 1))
    args = [*LAUNCHERS[launcher], *ENDLESS, f"seed={seeds}", f"hydra.sweep.dir={sweep_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(
        [sys.executable, "-m", "dlrun", "-m", *args],
        cwd=sweep_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, to signal as a terminal would
    )


def wait_until_training(sweep_dir: Path, running: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 150
    while time.time() < deadline and proc.poll() is None:
        started = [sweep_dir / str(j) / "metrics.jsonl" for j in range(running)]
        if all(p.exists() and p.stat().st_size > 0 for p in started):
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the sweep's jobs did not start: {proc.communicate()[1][-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "target", "sig"),
    [
        ("joblib", "parent", signal.SIGINT),
        ("joblib", "group", signal.SIGINT),
        ("joblib", "group", signal.SIGTERM),
        ("submitit", "parent", signal.SIGINT),
        ("submitit", "group", signal.SIGTERM),
        ("basic", "group", signal.SIGINT),
    ],
    ids=lambda v: getattr(v, "name", v),
)
def test_an_interrupted_sweep_keeps_each_jobs_latest_epoch(
    tmp_path: Path, launcher: str, target: str, sig: signal.Signals
) -> None:
    sweep_dir = tmp_path / "sweep"
    # jobs running when the signal comes, and jobs in all: the basic launcher runs one at a time,
    # joblib two (a third waits for a worker), submitit_local starts every job at once
    running, jobs = {"basic": (1, 2), "joblib": (2, 3), "submitit": (2, 2)}[launcher]
    proc = start(sweep_dir, launcher, jobs)
    wait_until_training(sweep_dir, running, proc)
    workers = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    if target == "parent":
        proc.send_signal(sig)
    else:
        os.killpg(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, err
    assert "internal error" not in err and "Traceback" not in err
    assert f"continue it with: dlrun -m {' '.join(LAUNCHERS[launcher])}".rstrip() in err
    assert f"hydra.sweep.dir={sweep_dir}" in err

    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    statuses = [j["status"] for j in manifest["jobs"]]
    assert statuses == ["interrupted"] * running + ["pending"] * (jobs - running), manifest
    for job in range(running):
        summary = json.loads((sweep_dir / str(job) / "summary.json").read_text())
        state = torch.load(sweep_dir / str(job) / "checkpoints" / "last.pt", weights_only=True)
        # the epoch in progress was finished and saved: later than any scheduled checkpoint
        assert state["epoch"] == summary["epochs_completed"] > 0
    assert not (sweep_dir / ".stop-requested").exists()
    time.sleep(1)
    left = [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not left, f"worker processes left behind: {left}"
