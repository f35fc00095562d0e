"""`hydra/launcher=ray` on a real two-node Ray cluster on 127.0.0.1 (a head and a worker node,
one CPU each, each node a process tree of its own): a sweep's jobs run on both nodes and finish
with their metrics; a job whose node is killed mid-run is recorded failed while the other
finishes, and the same command, with the worker back, finishes it from its last.pt and skips
the completed job. Skipped where Ray is not installed (pip install '.[ray]')."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.test_cluster_torchrun import _port
from tests.sweeps.test_cluster_slurm import epochs_logged, wait

pytest.importorskip("ray", reason="needs Ray: pip install '.[ray]'")
pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs pip install '.[ray]'")
psutil = pytest.importorskip("psutil", reason="needs psutil (dlrun[sweep])")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Ray's command line, installed beside this Python (or on the PATH)
BESIDE = Path(sys.executable).with_name("ray")
RAY = str(BESIDE) if BESIDE.is_file() else shutil.which("ray")
if RAY is None:
    pytest.skip(
        "Ray's `ray` command is not installed: pip install '.[ray]'", allow_module_level=True
    )

# sine-bp with 2,000 steps an epoch (about 0.1 s on a free core), every epoch logged and saved
TASK = (
    "task=sine-bp",
    "device=cpu",
    "task.points=20000",
    "trainer.batch_size=10",
    "trainer.plots=false",
    "trainer.validate_every=1",
    "trainer.log_every=1",
    "trainer.checkpoint_every=1",
)


class Cluster:
    """A head node and a worker node, each `ray start --block` (its node's processes are its
    children, so a node is killed as one process tree, as a machine dies)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
        self.env.pop("HYDRA_FULL_ERROR", None)
        self.env.pop("RAY_ADDRESS", None)
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.head_id = self.worker_id = ""
        self.logs: dict[int, Path] = {}  # each `ray start`'s output

    def start(self) -> None:
        head = ("--head", f"--port={self.port}", f"--temp-dir={self.root}")
        self.head = self._start(
            "head", *head, "--include-dashboard=false", f"--ray-client-server-port={_port()}"
        )
        self.head_id = self._wait_nodes(1, self.head)[0]
        self.start_worker()

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.root.parent / f"{self.root.name}-{name}.log"
        ports = (
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
        )
        command = [
            RAY,
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
            *(f"{p}={_port()}" for p in ports),
            *args,
        ]
        with open(log, "w") as out:
            node = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.logs[node.pid] = log
        return node

    def nodes(self) -> list[str]:
        """The ids of the cluster's live nodes, as Ray's own state API lists them."""
        shown = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, ray\n"
                "ray.init(address='auto', logging_level='ERROR')\n"
                "print('nodes', json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))",
            ],
            env={**self.env, "RAY_ADDRESS": self.address},
            capture_output=True,
            text=True,
            timeout=120,
        )
        said = [line for line in shown.stdout.splitlines() if line.startswith("nodes [")]
        return json.loads(said[-1][6:]) if shown.returncode == 0 and said else []

    def _wait_nodes(self, count: int, node: subprocess.Popen) -> list[str]:
        found: list[str] = []

        def enough() -> bool:
            if node.poll() is not None:  # `ray start` failed: say why
                said = self.logs[node.pid].read_text()[-2000:]
                pytest.fail(f"a Ray node did not start:\n{said}")
            found[:] = self.nodes()
            return len(found) == count

        wait(enough, timeout=150, every=1)
        return found

    def start_worker(self) -> None:
        self.worker = self._start("worker", f"--address={self.address}")
        self.worker_id = next(n for n in self._wait_nodes(2, self.worker) if n != self.head_id)

    def kill_worker(self) -> None:
        kill_tree(self.worker)
        self.worker = None
        wait(lambda: self.nodes() == [self.head_id], timeout=120, every=1)

    def stop(self) -> None:
        """Kill both nodes, then remove their session files and logs."""
        for node in (self.worker, self.head):
            kill_tree(node)
        shutil.rmtree(self.root, ignore_errors=True)
        for log in self.logs.values():
            log.unlink(missing_ok=True)


def kill_tree(proc: subprocess.Popen | None) -> None:
    """SIGKILL a node: its `ray start` and every process under it."""
    if proc is None or proc.poll() is not None:
        return
    tree = [psutil.Process(proc.pid)]
    tree += tree[0].children(recursive=True)
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="dlrun-ray-"))  # short: Ray's socket paths live in it
    running = Cluster(root)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def dlrun(cluster: Cluster, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dlrun",
            "-m",
            "hydra/launcher=ray",
            f"hydra.launcher.ray.init.address={cluster.address}",
            *args,
        ],
        cwd=cwd,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the sweep did not end:\n{proc.communicate()[0][-3000:]}")


def node_of(job_dir: Path) -> str | None:
    """The Ray node a job ran on, as the job itself noted it (.hydra/ray.json)."""
    record = job_dir / ".hydra" / "ray.json"
    return json.loads(record.read_text())["node_id"] if record.is_file() else None


def test_sweep_runs_on_both_nodes(cluster: Cluster, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = dlrun(
        cluster,
        *TASK,
        "trainer.epochs=20",
        "seed=1,2,3,4",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "sweep: 4 jobs (4 completed)" in out
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["counts"] == {"completed": 4}, manifest
    for entry in manifest["jobs"]:
        summary = json.loads((sweep / entry["dir"] / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs_completed"] == 20
        assert summary["objective_name"] == "mse" and 0 < summary["objective"] < 1000
    # one CPU a node and one a job: the jobs were placed on both nodes
    assert {node_of(sweep / str(n)) for n in range(4)} == {cluster.head_id, cluster.worker_id}

    report = subprocess.run(
        [sys.executable, "-m", "dlrun.sweeps.report", str(sweep), "--no-group"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    rows = [line for line in report.stdout.splitlines() if "sine-bp seed=" in line]
    assert len(rows) == 4 and all("completed" in row for row in rows), report.stdout


def test_job_lost_with_its_node_is_failed_and_the_same_command_finishes_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    command = (*TASK, "trainer.epochs=150", "seed=1,2", f"hydra.sweep.dir={sweep}")
    first = dlrun(cluster, *command, cwd=tmp_path)

    def on_worker() -> list[int]:
        return [n for n in (0, 1) if node_of(sweep / str(n)) == cluster.worker_id]

    wait(lambda: bool(on_worker()) and epochs_logged(sweep / str(on_worker()[0])) >= 3)
    (lost,) = on_worker()
    kept = 1 - lost
    assert node_of(sweep / str(kept)) == cluster.head_id
    cluster.kill_worker()  # the worker node dies with the job's process
    out = finish(first)
    assert first.returncode == 1, out[-3000:]
    assert f"job {lost} failed: NodeDiedError" in out
    assert "dlrun: error: 1 of 2 jobs failed" in out
    manifest = json.loads((sweep / "sweep.json").read_text())
    statuses = {e["job"]: e["status"] for e in manifest["jobs"]}
    assert statuses == {str(kept): "completed", str(lost): "failed"}, manifest
    failed = json.loads((sweep / str(lost) / "summary.json").read_text())
    assert failed["error"].startswith("NodeDiedError: its Ray worker or node died")
    assert failed["exit_code"] == 1 and (sweep / str(lost) / "checkpoints/last.pt").is_file()
    done = (sweep / str(kept) / "summary.json").stat().st_mtime_ns

    # the same command, with a worker node back: the completed job is skipped, the lost one
    # resumes from its last.pt
    cluster.start_worker()
    again = dlrun(cluster, *command, cwd=tmp_path)
    out = finish(again)
    assert again.returncode == 0, out[-3000:]
    assert "sweep: 2 jobs (2 completed)" in out
    assert (sweep / str(kept) / "summary.json").stat().st_mtime_ns == done
    resumed = json.loads((sweep / str(lost) / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs_completed"] == 150
    assert [r["from"] for r in resumed["resumes"]] == [
        str(sweep / str(lost) / "checkpoints/last.pt")
    ]
    assert resumed["resumes"][0]["epoch"] >= 3


def test_no_cluster_at_the_address_is_one_line(tmp_path: Path) -> None:
    """Ray would try a silent address for minutes: dlrun says so at once, before any job."""
    address = f"127.0.0.1:{_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlrun",
            "-m",
            "hydra/launcher=ray",
            f"hydra.launcher.ray.init.address={address}",
            *TASK,
            "seed=1,2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"dlrun: error: hydra.launcher.ray.init.address={address}: no Ray")
    assert "ray start --head" in line
    assert not (tmp_path / "multirun").exists()
