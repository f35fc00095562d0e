"""Multi-node torchrun on 127.0.0.1: two agents (--nnodes=2, c10d rendezvous, one process each)
train exactly as one agent with two processes, resume the same way, and only global rank 0
writes. Each agent runs in its own working directory, as on two machines; the run directory is
the "shared file system" both reach by its absolute path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlrun.engine.distributed import weights_digest

TASK = ("task=sine-bp", "device=cpu", "trainer.shuffle=true", "trainer.plots=false")
EPOCHS = ("trainer.validate_every=1", "trainer.log_every=1", "trainer.checkpoint_every=1")
RUN = "trainer.batch_size=10"

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def two_nodes(*args: str, node0: Path, node1: Path, tmp: Path) -> list[tuple[int, str]]:
    """Two torchrun agents meeting at a c10d rendezvous on 127.0.0.1, one process each."""
    endpoint = f"127.0.0.1:{_port()}"
    procs = []
    for cwd in (node0, node1):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={endpoint}",
            f"--rdzv_id=dlrun-test-{endpoint}",
            "-m",
            "dlrun",
            *args,
        ]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=cwd,
                env=_env(tmp),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    out = []
    for p in procs:
        try:
            out.append((p.wait(timeout=300), p.stdout.read()))
        finally:
            p.kill()
    return out


def standalone(*args: str, cwd: Path, tmp: Path) -> subprocess.CompletedProcess:
    """One agent, two processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*cmd, "-m", "dlrun", *args],
        cwd=cwd,
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _model(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["model"]


def test_two_agents_train_and_resume_like_one_agent_with_two_processes(tmp_path: Path) -> None:
    node0, node1, single, tmp = (tmp_path / n for n in ("node0", "node1", "single", "tmp"))
    for d in (node0, node1, single, tmp):
        d.mkdir()

    first = two_nodes(*TASK, *EPOCHS, RUN, "trainer.epochs=3", node0=node0, node1=node1, tmp=tmp)
    assert [code for code, _ in first] == [0, 0], first
    # rendezvous decides the ranks: whichever agent got global rank 0 wrote the one run directory
    runs = list(tmp_path.glob("node*/outputs/*/*"))
    assert len(runs) == 1, runs
    d = runs[0]
    writer = d.parents[2]
    other = node1 if writer == node0 else node0
    assert list(other.iterdir()) == []  # the other node wrote nothing, here or in TMPDIR
    assert not list(tmp.glob("dlrun-*"))
    assert sum(out.count("run directory:") for _, out in first) == 1  # only rank 0 speaks
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs_completed"] == 3
    dist = s["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["in_sync"]

    # resume on both nodes from the shared run directory, to 6 epochs
    resumed = two_nodes(f"resume={d}", "trainer.epochs=6", node0=node0, node1=node1, tmp=tmp)
    assert [code for code, _ in resumed] == [0, 0], resumed
    assert list(tmp_path.glob("node*/outputs/*/*")) == [d] and list(other.iterdir()) == []
    assert not list(tmp.glob("dlrun-*"))
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs_completed"] == 6
    assert s["resumes"][0]["epoch"] == 3
    assert s["distributed"]["in_sync"]
    nodes = _model(d)
    assert s["distributed"]["weights_sha256"][0] == weights_digest(nodes)

    # one agent, two processes, 6 epochs straight through: the same weights, bit for bit
    one = standalone(*TASK, *EPOCHS, RUN, "trainer.epochs=6", cwd=single, tmp=tmp)
    assert one.returncode == 0, one.stderr[-3000:]
    (ref,) = list(single.glob("outputs/*/*"))
    weights = _model(ref)
    assert nodes.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(nodes[key], value), key

    def losses(run_dir: Path) -> list[tuple[int, str, float]]:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [(m["epoch"], m["split"], m["loss"]) for m in map(json.loads, lines)]

    assert losses(d) == losses(ref) and len(losses(d)) == 12
