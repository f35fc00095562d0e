"""logger=mlflow against the real MLflow store (SQLite in tmp_path, a real server), read back
with MlflowClient: params, the full metric history, artifacts, status, resume, sweeps."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")  # one import for the whole file: it is slow

from mlflow.tracking import MlflowClient  # noqa: E402

from dlrun.commands import rerun  # noqa: E402
from dlrun.errors import DlrunError  # noqa: E402
from dlrun.rundir.summary import shortest  # noqa: E402
from dlrun.tracking import mlflow_run as tracking  # noqa: E402
from dlrun.tracking.mlflow_logger import MLflowConfig  # noqa: E402
from dlrun.tracking.store_check import check_store  # noqa: E402
from tests.conftest import call_main, run_cli  # noqa: E402

CONFIG = {"task": {"hidden": 25}, "optimizer": {"lr": 0.3}, "trainer": {"batch_size": 64}}
TAGS = {"task": "sine-bp", "optimizer": "sgd", "device": "cpu", "seed": 0}


def rows(first: int = 1, last: int = 4) -> list[dict]:
    """metrics.jsonl-like rows: train every epoch, val every other one (a NaN among them)."""
    out = []
    for e in range(first, last + 1):
        out.append({"epoch": e, "split": "train", "loss": 1.0 / e, "time_s": 0.01 * e})
        if e % 2 == 0:
            out.append({"epoch": e, "split": "val", "loss": 2.0 / e, "mse": math.nan, "n": 7})
    return out


def history(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The rows as MLflow metrics: '<split>/<metric>' -> [(epoch, value), ...]."""
    want: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key not in ("epoch", "split"):
                value = float(shortest(value))  # float32 values at their shortest form
                want.setdefault(f"{row['split']}/{key}", []).append((row["epoch"], value))
    return want


def stored(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    got = {}
    for key in run.data.metrics:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))
        got[key] = [(m.step, m.value) for m in points]
    return got


def same(got: dict, want: dict) -> bool:
    """Equal histories, NaN equal to NaN."""
    if sorted(got) != sorted(want):
        return False
    return all(
        [s for s, _ in got[k]] == [s for s, _ in want[k]]
        and all(
            a == b or (math.isnan(a) and math.isnan(b))
            for (_, a), (_, b) in zip(got[k], want[k], strict=True)
        )
        for k in want
    )


def run_dir(root: Path, name: str = "run") -> Path:
    """A run directory as a finished run leaves it: config, summary, a plot, a checkpoint."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text("task:\n  hidden: 25\n")
    (d / "plots").mkdir()
    (d / "plots" / "loss.png").write_bytes(b"\x89PNG not really")
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.pt").write_bytes(b"weights")
    (d / "summary.json").write_text(json.dumps({"status": "completed", "device": "cpu"}))
    return d


def settings(root: Path, **kw) -> MLflowConfig:
    return MLflowConfig(enabled=True, tracking_uri=f"sqlite:///{root / 'mlflow.db'}", **kw)


def start(root: Path, d: Path, **kw) -> tracking.MlflowRun:
    s = kw.pop("settings", None) or settings(root)
    return tracking.MlflowRun(s, d, CONFIG, TAGS, experiment="sine-bp", **kw)


def test_a_run_holds_params_tags_metrics_artifacts_and_status(tmp_path: Path) -> None:
    d = run_dir(tmp_path)
    run = start(tmp_path, d, settings=settings(tmp_path, log_checkpoints=True))
    for row in rows():
        run.append(row)
    run.finish("completed")
    assert run.error is None and run.run_id == tracking.run_id(d)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    assert client.get_experiment(got.info.experiment_id).name == "sine-bp"
    assert got.data.params == {
        "task.hidden": "25",
        "optimizer.lr": "0.3",
        "trainer.batch_size": "64",
        "logger.mlflow.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",  # the values in use
        "logger.mlflow.experiment": "sine-bp",
    }
    tags = got.data.tags
    assert {k: tags[k] for k in ("task", "optimizer", "device", "seed", "status")} == {
        "task": "sine-bp",
        "optimizer": "sgd",
        "device": "cpu",
        "seed": "0",
        "status": "completed",
    }
    assert tags["run_dir"] == str(d) and tags["dlrun_version"]
    assert same(stored(client, run.run_id), history(rows()))
    top = {a.path for a in client.list_artifacts(run.run_id)}
    assert top == {"plots", "summary.json", "config.yaml", "checkpoints"}
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == ["plots/loss.png"]
    # artifacts beside the database
    assert got.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())


def test_each_end_state_has_its_mlflow_status(tmp_path: Path) -> None:
    ends = {"failed": "FAILED", "diverged": "FAILED", "interrupted": "KILLED"}
    runs = {}
    for status in ends:  # started together: their workers start up side by side
        runs[status] = start(tmp_path, run_dir(tmp_path, status))
        runs[status].append(rows()[0])
    for status, run in runs.items():
        run.finish(status)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for status, want in ends.items():
        got = client.get_run(runs[status].run_id)
        assert (got.info.status, got.data.tags["status"]) == (want, status)
        assert {a.path for a in client.list_artifacts(got.info.run_id)} == {
            "plots",
            "summary.json",
            "config.yaml",  # no checkpoints unless asked for
        }


def test_a_continued_run_stays_one_run_and_a_rerun_is_a_new_one(tmp_path: Path) -> None:
    d = run_dir(tmp_path)
    first = start(tmp_path, d)
    for row in rows(1, 4):
        first.append(row)
    first.finish("interrupted")
    # the resume: trainer.epochs changed, epochs 3-4 trained again from a checkpoint at 2
    again = tracking.MlflowRun(
        settings(tmp_path),
        d,
        {**CONFIG, "trainer": {"batch_size": 32}},
        TAGS,
        experiment="sine-bp",
        resume_epoch=2,
    )
    for row in rows(3, 6):
        again.append(row)
    again.finish("completed")
    assert again.run_id == first.run_id and again.error is None

    copy = start(tmp_path, run_dir(tmp_path, "rerun"), reproduces=d)
    copy.append(rows()[0])
    copy.finish("completed")

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    got = client.get_run(first.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["trainer.batch_size"] == "64"  # a param is fixed once logged
    assert got.data.tags["resumed.trainer.batch_size"] == "32"
    assert got.data.tags["resumed_from_epochs"] == "2"
    # every value logged stays: epochs 3 and 4 appear once per time they were trained
    assert same(stored(client, first.run_id), history(rows(1, 4) + rows(3, 6)))
    runs = client.search_runs([got.info.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["rerun", "run"]
    rerun = next(r for r in runs if r.info.run_name == "rerun")
    assert rerun.data.tags["reproduces"] == str(d)
    assert rerun.data.tags["reproduces_run_id"] == first.run_id


JOB = """
import os, sys
from pathlib import Path
from dlrun.tracking import mlflow_run as tracking  # noqa: E402
from dlrun.tracking.mlflow_logger import MLflowConfig
root, name, crash = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "crash"
d = root / "sweep" / name
d.mkdir(parents=True)
run = tracking.MlflowRun(
    MLflowConfig(enabled=True, tracking_uri=f"sqlite:///{root / 'mlflow.db'}"), d,
    {"optimizer": {"lr": float(name) / 10}}, {"task": "sine-bp"}, experiment="sine-bp",
    sweep_dir=root / "sweep", sweep_overrides=["optimizer.lr=0.0,0.1"],
)
run.append({"epoch": 1, "split": "val", "loss": 1.5})
if crash:
    os._exit(1)  # the job's process dies without ending its run
run.finish("completed")
"""


def test_a_sweep_is_a_parent_with_children_from_other_processes(tmp_path: Path) -> None:
    """Two jobs in two processes (as joblib's workers are); one of them dies mid-run."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    jobs = [
        subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path), name, how], env=env)
        for name, how in (("0", "finish"), ("1", "crash"))
    ]
    assert [job.wait(timeout=120) for job in jobs] == [0, 1]
    sweep = tmp_path / "sweep"
    parent_id = tracking.parent_run_id(sweep)
    assert tracking.finish_sweep(sweep, 1.5, "loss") == parent_id

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    deadline = time.monotonic() + 60  # the dead job's worker ends its run on its own

    def dead_job_status() -> str | None:  # its worker may not have stored the run's id yet
        run_id = tracking.run_id(sweep / "1")
        return None if run_id is None else client.get_run(run_id).info.status

    while dead_job_status() in (None, "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.2)
    children = {n: tracking.run_id(sweep / n) for n in ("0", "1")}
    runs = {
        r.info.run_id: r
        for r in client.search_runs([client.get_experiment_by_name("sine-bp").experiment_id])
    }
    assert set(runs) == {parent_id, *children.values()}  # one parent, created once
    for child in children.values():
        assert runs[child].data.tags["mlflow.parentRunId"] == parent_id
    assert runs[children["0"]].info.status == "FINISHED"
    assert runs[children["1"]].info.status == "FAILED"  # a crash still ends the run
    parent = runs[parent_id]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.overrides"] == "optimizer.lr=0.0,0.1"
    assert parent.data.metrics["best/loss"] == 1.5


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("http://127.0.0.1:{port}", "the tracking server does not answer"),
        ("sqlite:///{root}/missing/mlflow.db", "missing is not a directory"),
    ],
)
def test_an_unusable_store_is_refused_in_one_line(tmp_path: Path, uri: str, says: str) -> None:
    uri = uri.format(port=_closed_port(), root=tmp_path)
    with pytest.raises(DlrunError) as caught:
        check_store(tracking.tracking_uri(MLflowConfig(enabled=True, tracking_uri=uri)))
    line = str(caught.value)
    assert len(line.splitlines()) == 1 and says in line
    assert line.startswith(f"logger.mlflow.tracking_uri={uri} cannot be used")


def artifact_json(client: MlflowClient, run_id: str, path: str, into: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path, str(into))).read_text())


def test_the_command_logs_its_run_resumes_it_and_reruns_it(dlrun, tmp_path: Path, capsys) -> None:
    """One run through the command: what metrics.jsonl holds, the final summary.json and plots/
    as artifacts, the real device; a resume stays that run; dlrun-rerun makes a tagged new one."""
    args = ("task=sine-bp", "trainer.log_every=1", "trainer.validate_every=5")
    r = dlrun(*args, "trainer.epochs=20", "logger=[jsonl,mlflow]")
    assert r.code == 0, r.err
    run_id = tracking.run_id(r.run_dir)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the working directory's store
    assert same(stored(client, run_id), history(r.metrics()))
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.params["trainer.epochs"] == "20"
    assert got.data.params["device"] == "auto"  # the setting, as composed
    assert got.data.tags["device"] == r.summary()["device"] == "cpu"  # the device it ran on
    assert got.data.tags["task"] == "sine-bp" and got.info.run_name == r.summary()["name"]
    plots = {Path(a.path).name for a in client.list_artifacts(run_id, "plots")}
    assert plots and plots == {p.name for p in (r.run_dir / "plots").iterdir()}
    uploaded = artifact_json(client, run_id, "summary.json", tmp_path / "a1")
    assert uploaded["status"] == "completed" and uploaded["epochs_completed"] == 20
    assert "tracking_error" not in r.summary()
    # the end's wait for the store is not in wall_s: summary.json was final before it
    assert uploaded["wall_s"] == r.summary()["wall_s"]

    again = dlrun(f"resume={r.run_dir}", "trainer.epochs=24")  # continues the same MLflow run
    assert again.code == 0, again.err
    assert tracking.run_id(r.run_dir) == run_id
    assert len(client.search_runs([got.info.experiment_id])) == 1
    assert same(stored(client, run_id), history(r.metrics()))
    assert client.get_run(run_id).data.tags["resumed.trainer.epochs"] == "24"
    assert client.get_run(run_id).info.status == "FINISHED"

    new = tmp_path / "copy"
    code, _, err = call_main(rerun.main, capsys, r.run_dir, f"hydra.run.dir={new}")
    assert code == 0, err
    copy = client.get_run(tracking.run_id(new))
    assert copy.info.run_id != run_id and copy.info.status == "FINISHED"
    assert copy.data.tags["reproduces"] == str(r.run_dir.resolve())
    assert copy.data.tags["reproduces_run_id"] == run_id
    assert len(client.search_runs([got.info.experiment_id])) == 2


def test_a_diverged_run_ends_failed_after_its_summary(dlrun, tmp_path: Path) -> None:
    r = dlrun(
        "task=sine-bp", "optimizer.lr=1000", "trainer.plots=false", "trainer.log_every=1",
        "logger=mlflow",
    )  # fmt: skip
    assert r.code == 3, r.err
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    got = client.get_run(tracking.run_id(r.run_dir))
    assert (got.info.status, got.data.tags["status"]) == ("FAILED", "diverged")
    assert artifact_json(client, got.info.run_id, "summary.json", tmp_path / "a")["status"] == (
        "failed"
    )
    assert same(stored(client, got.info.run_id), history(r.metrics()))


@pytest.mark.slow
def test_an_interrupted_run_ends_killed(tmp_path: Path) -> None:
    """A real SIGINT: the run stops at an epoch boundary and its MLflow run ends KILLED."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun", "task=sine-bp", "trainer.epochs=100000",
         "trainer.log_every=1", "trainer.plots=false", "logger=mlflow", f"hydra.run.dir={run}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "mlflow.json").is_file():
        time.sleep(0.2)  # the worker has made the run: the store is in use
    proc.send_signal(2)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    got = client.get_run(tracking.run_id(run))
    assert (got.info.status, got.data.tags["status"]) == ("KILLED", "interrupted")
    assert same(stored(client, got.info.run_id), history(rundir_rows(run)))


def rundir_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_joblib_sweep_is_one_parent_with_its_jobs_and_a_rerun_adds_none(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = (
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "task=sine-bp",
        "trainer.epochs=30", "trainer.plots=false", "trainer.progress=false", "logger=mlflow",
        "optimizer.lr=0.05,0.2", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    for _ in range(2):  # the second time every job is skipped: completed earlier
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sine-bp").experiment_id])
    parent_id = tracking.parent_run_id(sweep)
    children = {tracking.run_id(sweep / n) for n in ("0", "1")}
    assert {r.info.run_id for r in runs} == {parent_id, *children}  # nothing duplicated
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    # the sweep's own overrides, as typed (Hydra's settings aside)
    assert parent.data.params["sweep.overrides"].split() == list(args[3:-1])
    objectives = [json.loads((sweep / n / "summary.json").read_text()) for n in ("0", "1")]
    name = objectives[0]["objective_name"]
    pick = max if objectives[0]["maximize"] else min
    best = pick(objectives, key=lambda o: o["objective"])
    assert parent.data.metrics[f"best/{name}"] == best["objective"]
    # the parent names the child that won; each job is named by the override it varies
    assert parent.data.tags["best_run_id"] == tracking.run_id(sweep / str(objectives.index(best)))
    assert parent.info.run_name == "sine-bp sweep lr=0.05,0.2"
    assert sorted(client.get_run(c).info.run_name for c in children) == [
        "sine-bp lr=0.05",
        "sine-bp lr=0.2",
    ]
    for child in children:
        got = client.get_run(child)
        assert got.data.tags["mlflow.parentRunId"] == parent_id
        assert got.info.status == "FINISHED"


def test_the_command_refuses_an_unreachable_server_before_training(dlrun) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    r = dlrun("task=sine-bp", "logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
    assert r.code == 2
    assert r.err.strip().splitlines() == [
        f"dlrun: error: logger.mlflow.tracking_uri={uri} cannot be used: the tracking server does "
        "not answer ([Errno 111] Connection refused); expected a running tracking server or a "
        "writable directory (logger.mlflow.tracking_uri=, MLFLOW_TRACKING_URI)"
    ]
    assert not r.run_dir.exists()  # refused before any work, like any other mistake


def test_missing_mlflow_names_the_extra(dlrun, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    r = dlrun("logger=[jsonl,mlflow]", "task=sine-bp")
    assert r.code == 2, r.err
    assert r.err.strip() == (
        "dlrun: error: logger=mlflow needs the mlflow package, which is not installed: "
        "pip install 'dlrun[mlflow]'"
    )
    assert not r.run_dir.exists()


@pytest.mark.slow
def test_a_run_over_http_to_a_real_tracking_server(tmp_path: Path) -> None:
    port = _closed_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [  # `python -m mlflow`: a venv on the system's site-packages has no mlflow script
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start within 120 s"
            time.sleep(0.5)
        d = run_dir(tmp_path)
        run = tracking.MlflowRun(
            MLflowConfig(enabled=True, tracking_uri=uri), d, CONFIG, TAGS, experiment="sine-bp"
        )
        for row in rows():
            run.append(row)
        run.finish("completed")
        assert run.error is None
        client = MlflowClient(uri)
        got = client.get_run(run.run_id)
        assert got.info.status == "FINISHED" and got.data.params["optimizer.lr"] == "0.3"
        assert same(stored(client, run.run_id), history(rows()))
        assert "summary.json" in {a.path for a in client.list_artifacts(run.run_id)}
    finally:
        os.killpg(server.pid, 15)  # the server and its uvicorn workers
        server.wait(timeout=30)


def test_help_and_config_errors_never_import_mlflow(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from dlrun.cli import main as cli\n"
        "for args in (['--help', 'logger=mlflow'], ['logger=mlflow', 'optimizer.lr=0']):\n"
        "    try:\n"
        "        cli.main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('mlflow', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
