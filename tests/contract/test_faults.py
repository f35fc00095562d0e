"""Faults made for real: a kill during a checkpoint save, a full disk, an out-of-memory error."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlrun.engine import checkpoint

SAVE_FOREVER = """
import sys
from pathlib import Path
import torch
from dlrun.engine import checkpoint

path = Path(sys.argv[1])
i = 0
while True:
    i += 1
    w = torch.full((1_000_000,), float(i))
    state = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "i": i, "w": w}
    checkpoint.save(path, state)
    print(i, flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.011])
def test_sigkill_while_saving_leaves_the_previous_checkpoint_loadable(
    tmp_path: Path, delay: float
) -> None:
    path = tmp_path / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVE_FOREVER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(3):  # a few saves done: the next one is under way, or about to be
            last = int(proc.stdout.readline())
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = checkpoint.load(path)  # a whole checkpoint, not a torn one
    assert state["i"] >= last
    assert torch.equal(state["w"], torch.full((1_000_000,), float(state["i"])))


SINE = ("task=sine-bp", "trainer.plots=false", "trainer.validate_every=100", "trainer.log_every=1")


def test_a_full_disk_is_reported_before_training(dlrun, tmp_path: Path, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    r = dlrun(*SINE, "trainer.epochs=2")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: cannot write the run directory")
    assert "No space left on device" in lines[0] and "hydra.run.dir=" in lines[0]
    assert "epoch" not in r.out  # no training started
    assert not r.run_dir.exists()


def test_a_failed_checkpoint_write_keeps_the_previous_one(dlrun, monkeypatch) -> None:
    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(obj["epoch"])
        if len(calls) == 3:  # epoch 3's last.pt: half written, then the disk is full
            real_save(obj, f, *args, **kwargs)
            f.truncate(100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    r = dlrun(*SINE, "trainer.epochs=5", "trainer.checkpoint_every=1")
    monkeypatch.setattr(torch, "save", real_save)

    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "checkpoint of epoch 3 (last.pt) not written" in lines[0]
    assert "No space left on device" in lines[0] and "last.pt still holds epoch 2" in lines[0]
    assert f"dlrun resume={r.run_dir}" in lines[0]
    state = checkpoint.load(r.run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 2
    assert os.listdir(r.run_dir / "checkpoints") == ["last.pt"]  # no temp file left
    assert r.summary()["status"] == "failed"
    # the run continues from epoch 2 once there is space again
    resumed = dlrun(f"resume={r.run_dir}")
    assert resumed.code == 0, resumed.err
    assert checkpoint.load(r.run_dir / "checkpoints" / "last.pt")["epoch"] == 5


def test_out_of_memory_names_the_batch_size(dlrun, monkeypatch) -> None:
    from dlrun.tasks.sine_bp.task import SineBP

    def too_big(self, model, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(SineBP, "loss", too_big)
    r = dlrun(*SINE, "trainer.epochs=2", "trainer.batch_size=64")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "out of GPU memory" in lines[0]
    assert "trainer.batch_size=64" in lines[0] and "try trainer.batch_size=32" in lines[0]
    assert "Traceback" not in r.err
    assert r.summary()["status"] == "failed"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_real_cuda_out_of_memory(dlrun) -> None:
    # a 1M-row batch through a 40000-wide hidden layer: 160 GB of activations
    r = dlrun(
        "task=fizzbuzz",
        "device=cuda",
        "task.num_digits=20",
        "task.hidden=40000",
        "trainer.batch_size=1000000",
        "trainer.epochs=1",
        "trainer.plots=false",
    )
    assert r.code == 2, r.err
    assert "out of GPU memory" in r.err and "trainer.batch_size=1000000" in r.err
