"""Data-parallel training: torchrun with 2 gloo processes on the CPU against one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlrun.engine import distributed
from dlrun.engine.distributed import weights_digest

# sine-bp, shuffled, 5 steps an epoch: 2 processes of batch 10 take the same examples per step
# as one process of batch 20 (rank r takes positions r, r+2, ... of each epoch's permutation)
TASK = ("task=sine-bp", "device=cpu", "trainer.shuffle=true", "trainer.plots=false")
EPOCHS = ("trainer.validate_every=1", "trainer.log_every=1", "trainer.checkpoint_every=1")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", **extra}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def torchrun(*args: str, cwd: Path, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*cmd, "-m", "dlrun", *args],
        cwd=cwd,
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )


def two_processes(*args: str, cwd: Path, tmp: Path) -> list[tuple[int, str]]:
    """Both ranks started directly with the variables torchrun sets (no agent: faster)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dlrun", *args],
            cwd=cwd,
            env=_env(
                tmp,
                RANK=str(r),
                LOCAL_RANK=str(r),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    return [(p.wait(timeout=300), p.stdout.read()) for p in procs]


def _model(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["model"]


@pytest.mark.parametrize(("n", "world"), [(100, 2), (5, 2), (7, 3), (2, 4)])
def test_shards_cover_the_permutation_in_equal_parts(n: int, world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    shards = []
    for r in range(world):
        strategy = distributed.DataParallel(rank=r, world_size=world)
        shards.append(strategy.shard(order, n, torch.device("cpu")))
        assert len(shards[-1]) == strategy.shard_size(n) == -(-n // world)
    # every example is in some shard; the padding repeats the permutation's start
    merged = torch.stack(shards, 1).reshape(-1)  # position-major: batch k of every rank
    assert set(merged.tolist()) == set(range(n))
    assert torch.equal(merged[:n], order) and torch.equal(
        merged[n:], order.repeat(world)[: len(merged) - n]
    )
    unshuffled = strategy.shard(None, n, torch.device("cpu"))  # the last rank's
    assert (
        unshuffled.tolist()
        == [i % n for i in range(world - 1, len(merged), world)][: len(unshuffled)]
    )


@pytest.mark.slow
def test_two_processes_train_in_step_like_one_and_resume(dlrun, tmp_path: Path) -> None:
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    first = torchrun(*TASK, *EPOCHS, "trainer.batch_size=10", "trainer.epochs=4", cwd=work, tmp=tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    # the ranks agreed on one run directory; rank 1 left nothing behind, here or in TMPDIR
    runs = list(work.glob("outputs/*/*"))
    assert len(runs) == 1 and {p.name for p in work.iterdir()} == {"outputs"}
    assert not list(tmp.glob("dlrun-*"))
    d = runs[0]
    assert first.stdout.count("run directory:") == 1  # only rank 0 speaks
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "completed" and s["distributed"]["world_size"] == 2
    assert s["distributed"]["backend"] == "gloo" and s["distributed"]["in_sync"]

    resumed = two_processes(f"resume={d}", "trainer.epochs=8", cwd=work, tmp=tmp)
    assert [code for code, _ in resumed] == [0, 0], resumed
    assert "run directory:" in resumed[0][1] and resumed[1][1] == ""  # rank 1 is silent
    assert list(work.glob("outputs/*/*")) == [d]
    assert not list(tmp.glob("dlrun-*"))
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs_completed"] == 8
    assert s["resumes"][0]["epoch"] == 4
    ranks = s["distributed"]["weights_sha256"]
    model = _model(d)
    assert ranks[0] == ranks[1] == weights_digest(model)  # both ranks hold the saved weights
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [(m["epoch"], m["split"]) for m in rows] == [
        (e, split) for e in range(1, 9) for split in ("train", "val")
    ]

    # one process, global batch 20, 8 epochs straight through
    one = dlrun(*TASK, *EPOCHS, "trainer.batch_size=20", "trainer.epochs=8")
    assert one.code == 0, one.err
    single = _model(one.run_dir)
    for key, value in single.items():
        torch.testing.assert_close(model[key], value, rtol=1e-4, atol=1e-5, msg=key)
    for a, b in zip(rows, one.metrics(), strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(b["loss"]), (a, b)


def test_more_processes_than_gpus_is_refused_before_the_group_forms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torchrun --nproc_per_node=2 on a machine with one visible GPU: one line naming both
    counts and what to do, before NCCL is asked to put two ranks on one GPU."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    rank1 = distributed.DataParallel(rank=1, world_size=2, local_rank=1, per_node=2)
    with pytest.raises(distributed.DlrunError) as refused:
        rank1.setup(torch.device("cuda", 0))
    assert refused.value.exit_code == 2
    message = str(refused.value)
    assert "started 2 processes on this machine but only 1 GPU(s) are visible" in message
    assert "--nproc_per_node=1" in message and "device=cpu" in message
    assert not torch.distributed.is_initialized()
    # as many processes as GPUs passes the check (the group itself needs real GPUs)
    distributed.DataParallel(rank=0, world_size=2, local_rank=0, per_node=2).check_gpu_count(2)


def test_a_refusal_under_torchrun_is_one_line_from_rank_0(tmp_path: Path) -> None:
    """Every rank refuses the same mistake; only rank 0 prints it (real torchrun, 2 ranks)."""
    r = torchrun("device=cuda:7", "trainer.epochs=1", cwd=tmp_path, tmp=tmp_path)
    assert r.returncode != 0
    lines = (r.stdout + r.stderr).splitlines()
    ours = [line for line in lines if line.startswith("dlrun: ")]  # torchrun adds its own report
    assert len(ours) == 1 and ours[0].startswith("dlrun: error: device=cuda:7"), ours
    assert "Traceback" not in r.stdout
