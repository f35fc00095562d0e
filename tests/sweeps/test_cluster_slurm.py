"""`hydra/launcher=slurm` on a real one-machine SLURM cluster (.ci/slurm-cluster.sh): jobs run
and finish, a failed job is isolated, the same command continues a sweep whose submitting shell
died, and a job requeued mid-run or stopped by its time limit resumes in its own directory to
exactly the weights of an uninterrupted run. Skipped where SLURM is not installed or cannot
start (it needs root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "slurm-cluster.sh"
LAUNCHER = (
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
)
# sine-bp with 2,000 steps an epoch (about 0.1 s on a free core), every epoch logged
TASK = (
    "task=sine-bp",
    "device=cpu",
    "task.points=20000",
    "trainer.batch_size=10",
    "trainer.shuffle=true",
    "trainer.plots=false",
    "trainer.validate_every=1",
    "trainer.log_every=1",
    "trainer.checkpoint_every=100000",  # last.pt only when stopped, and at the end
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The cluster's environment (SLURM_CONF); stopped after the module's tests."""
    if not shutil.which("slurmctld") or not shutil.which("munged"):
        pytest.skip("SLURM is not installed: .ci/slurm-cluster.sh install (as root)")
    if os.geteuid() != 0:
        pytest.skip("a one-machine SLURM cluster needs root (slurmd runs as root)")
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(
        [str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=120
    )
    if started.returncode != 0:
        pytest.skip(f"the SLURM cluster did not start: {started.stderr.strip()[-500:]}")
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf"), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    try:
        yield env
    finally:
        subprocess.run([str(SCRIPT), "stop", str(state)], timeout=120, check=False)


def dlrun(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def jobs(env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(job id, state, reason) of every job the cluster holds."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %T %r"], env=env, capture_output=True, text=True, check=True
    ).stdout
    return [tuple(line.split(maxsplit=2)) for line in out.splitlines()]


def release_requeued(env: dict[str, str]) -> None:
    """SLURM holds a requeued job two minutes before it may start again; start it now."""
    for job, state, reason in jobs(env):
        if state == "PENDING" and reason == "BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env)


def wait(condition: Callable[[], bool], timeout: float = 240, every: float = 0.5) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(every)


def epochs_logged(job_dir: Path) -> int:
    path = job_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return max((json.loads(line)["epoch"] for line in lines[:-1]), default=0)


def finish(proc: subprocess.Popen, env: dict[str, str], timeout: float = 300) -> str:
    """Wait for a sweep's submitter, releasing requeued jobs as it waits."""
    end = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the sweep did not end:\n{proc.stdout.read()[-3000:]}")
        release_requeued(env)
        time.sleep(0.5)
    return proc.stdout.read()


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["model"]


def test_sweep_runs_isolates_failures_and_continues_after_its_shell_died(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    command = (
        "-m",
        *LAUNCHER,
        *TASK,
        "trainer.epochs=40",
        "seed=1,2,3",
        "optimizer.lr=0.3,-1",
        f"hydra.sweep.dir={sweep}",
    )
    first = dlrun(*command, env=cluster, cwd=tmp_path)
    # the jobs of lr=0.3 are training on the cluster: the submitting shell dies (SIGKILL),
    # and the job of seed 3 is cancelled mid-run (SIGTERM: it saves its epoch and stops)
    wait(lambda: all(epochs_logged(sweep / str(n)) >= 3 for n in (0, 2, 4)))
    first.kill()
    first.wait()
    seed3 = [job for job, _, _ in jobs(cluster) if job.endswith("_4")]
    assert seed3, jobs(cluster)
    subprocess.run(["scancel", seed3[0]], env=cluster, check=True)
    wait(lambda: not jobs(cluster))  # the others finish without their submitter
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert [e["status"] for e in manifest["jobs"]] == [
        "completed",
        "failed",
        "completed",
        "failed",
        "interrupted",
        "failed",
    ], manifest
    done = {n: (sweep / str(n) / "summary.json").stat().st_mtime_ns for n in (0, 2)}

    # the same command again: completed jobs are skipped, the cancelled one resumes from its
    # last.pt, the failed ones fail again on their own
    again = dlrun(*command, env=cluster, cwd=tmp_path)
    out = finish(again, cluster)
    assert again.returncode == 2, out[-3000:]
    assert "dlrun: error: 3 of 6 jobs failed" in out and "optimizer.lr=-1" in out
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    assert logs.count("completed earlier, skipped") == 2  # the jobs' own output, on the cluster
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["counts"] == {"completed": 3, "failed": 3}
    assert all("lr" in e["error"] for e in manifest["jobs"] if e["status"] == "failed")
    assert {n: (sweep / str(n) / "summary.json").stat().st_mtime_ns for n in (0, 2)} == done
    resumed = json.loads((sweep / "4/summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs_completed"] == 40
    assert resumed["resumes"][0]["epoch"] >= 3

    report = subprocess.run(
        [sys.executable, "-m", "dlrun.sweeps.report", str(sweep), "--no-group"],
        env=cluster,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    rows = [line for line in report.stdout.splitlines() if "seed" in line or "│" in line]
    assert sum("completed" in r for r in rows) == 3 and sum("failed" in r for r in rows) == 3


def _reference(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """The same run, uninterrupted, in a plain process (started alongside the cluster's)."""
    return dlrun(*TASK, *args, f"hydra.run.dir={tmp_path / 'reference'}", env=env, cwd=tmp_path)


def test_requeued_job_resumes_in_its_directory_to_uninterrupted_weights(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    run = ("trainer.epochs=120", "seed=7")
    proc = dlrun(
        "-m", *LAUNCHER, *TASK, *run, f"hydra.sweep.dir={sweep}", env=cluster, cwd=tmp_path
    )
    wait(lambda: epochs_logged(sweep / "0") >= 5)
    reference = _reference(tmp_path, cluster, *run)
    ((job, state, _),) = jobs(cluster)
    assert state == "RUNNING"
    subprocess.run(["scontrol", "requeue", job], env=cluster, check=True)  # pre-empted
    out = finish(proc, cluster)
    assert proc.returncode == 0, out[-3000:]
    assert "1 completed" in out
    assert reference.wait(timeout=300) == 0, reference.stdout.read()[-3000:]

    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == [
        "0",
        "multirun.yaml",
        "sweep.json",
    ]
    summary = json.loads((sweep / "0/summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 120
    assert [r["from"] for r in summary["resumes"]] == [str(sweep / "0/checkpoints/last.pt")]
    assert 5 <= summary["resumes"][0]["epoch"] < 120
    mine, theirs = weights(sweep / "0"), weights(tmp_path / "reference")
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_job_at_its_time_limit_is_requeued_and_ends_with_uninterrupted_weights(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    # about 60 s of training on a free core (300 epochs take 10 s): SLURM checks time limits
    # every 30 s, so with a 1-minute limit and submitit's USR2 55 s before it the warning comes
    # 5 to 35 s into each attempt, and a shorter run may finish before it; stopped, the run
    # finishes its epoch, saves last.pt and submitit requeues the job (a few times)
    run = ("trainer.epochs=2000", "seed=8")
    limits = (
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=55",
        "hydra.launcher.max_num_timeout=40",
    )
    proc = dlrun(
        "-m", *LAUNCHER, *limits, *TASK, *run, f"hydra.sweep.dir={sweep}", env=cluster, cwd=tmp_path
    )
    reference = _reference(tmp_path, cluster, *run)
    out = finish(proc, cluster, timeout=900)  # several attempts, each with its start-up
    assert proc.returncode == 0, out[-3000:]
    assert reference.wait(timeout=600) == 0, reference.stdout.read()[-3000:]

    summary = json.loads((sweep / "0/summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2000
    assert summary["resumes"], "the job was never stopped by its time limit"
    assert all(0 < r["epoch"] < 2000 for r in summary["resumes"])
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.err"))
    assert "SIGUSR2" in logs and "timed-out" in logs
    mine, theirs = weights(sweep / "0"), weights(tmp_path / "reference")
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_srun_starts_torchrun_on_two_tasks_like_one_standalone_agent(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """`srun` starts one torchrun agent per SLURM task (here two tasks of the one node): they
    meet at a c10d rendezvous and train exactly as `torchrun --standalone` with 2 processes."""
    from tests.engine.test_cluster_torchrun import EPOCHS, RUN, _port, standalone
    from tests.engine.test_cluster_torchrun import TASK as SMALL

    work, single, tmp = (tmp_path / n for n in ("work", "single", "tmp"))
    for d in (work, single, tmp):
        d.mkdir()
    endpoint = f"127.0.0.1:{_port()}"
    agents = subprocess.run(
        [
            "srun",
            "--nodes=1",
            "--ntasks=2",
            "--cpus-per-task=1",
            "--kill-on-bad-exit=1",
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={endpoint}",
            f"--rdzv_id=srun-{endpoint}",
            "-m",
            "dlrun",
            *SMALL,
            *EPOCHS,
            RUN,
            "trainer.epochs=3",
        ],
        cwd=work,
        env={**cluster, "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert agents.returncode == 0, agents.stdout[-3000:] + agents.stderr[-3000:]
    assert agents.stdout.count("run directory:") == 1
    (run,) = list(work.glob("outputs/*/*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["distributed"]["world_size"] == 2

    one = standalone(*SMALL, *EPOCHS, RUN, "trainer.epochs=3", cwd=single, tmp=tmp)
    assert one.returncode == 0, one.stderr[-3000:]
    (ref,) = list(single.glob("outputs/*/*"))
    mine, theirs = weights(run), weights(ref)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
