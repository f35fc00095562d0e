"""Ctrl-C and SIGTERM stop at an epoch boundary with a resumable checkpoint."""

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

ARGS = (
    "task=sine-bp",
    "trainer.epochs=100000",
    "trainer.log_every=1",
    "trainer.validate_every=50",
    "trainer.checkpoint_every=0",
    "trainer.plots=false",
)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_at_an_epoch_boundary_and_resume_finishes(
    tmp_path: Path, dlrun, sig: int, code: int
) -> None:
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun", *ARGS, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text()) < 200):
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    done = summary["epochs_completed"]
    assert 0 < done < 100000
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == done  # the last completed epoch, not a half-trained one
    assert f"dlrun resume={run_dir}" in out

    # resume to a near end and compare with an uninterrupted run to the same epoch
    total = done + 3
    resumed = dlrun(f"resume={run_dir}", f"trainer.epochs={total}")
    assert resumed.code == 0, resumed.err
    straight = dlrun(*ARGS, f"trainer.epochs={total}")
    assert straight.code == 0
    a = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(straight.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_a_workers_own_signal_after_the_stop_file_is_not_taken_for_a_second_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep's worker can read the parent's stop file before the handler for its own copy of
    the terminal's signal runs, and submitit's controller forwards another copy: copies that
    arrive together only ask to stop; a signal REPEAT_S later aborts."""
    from dlrun.errors import Interrupted
    from dlrun.runs.interrupt import StopRequest

    monkeypatch.setattr(StopRequest, "REPEAT_S", 0.3)
    flag = tmp_path / ".stop-requested"
    flag.write_text(f"{signal.SIGTERM}\n")
    with StopRequest(flag) as stop:
        assert stop.signum == signal.SIGTERM  # read at an epoch boundary
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own copy arrives
        os.kill(os.getpid(), signal.SIGTERM)  # and the one the controller forwards
        time.sleep(0.05)
        assert stop.requested
        time.sleep(0.3)
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)  # asked again: abort now
            time.sleep(0.05)
