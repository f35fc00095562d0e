"""The process that talks to MLflow for one run: ``python -m dlrun.tracking.worker``.

mlflow's import and the store's set-up take seconds of CPU; in the training process they would
hold the GIL while the first epochs run, and a slow store would stall the loop. Here they run
beside it. The run's process sends JSON lines on stdin (``start``, then ``rows`` once per
logged epoch, then ``end``; ``open`` before them from a worker the command started early,
dlrun.tracking_early) and reads the run id and any error from stdout at the end; this
process's log goes to the run's dlrun.log. Its stdin closing without an ``end`` means the run's
process died: the MLflow run ends FAILED.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from dlrun.rundir import atomic as files
from dlrun.rundir.environment import git_commit
from dlrun.rundir.summary import shortest

log = logging.getLogger("dlrun.mlflow")

# dlrun's end states -> MLflow's run status
STATUS = {
    "completed": "FINISHED",
    "failed": "FAILED",
    "diverged": "FAILED",
    "interrupted": "KILLED",
}
KEYS = ("epoch", "split")  # every metrics row's coordinates; the rest are metrics
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
CHUNK = 100  # MLflow takes at most 100 params or tags in one log_batch
METRICS_CHUNK = 1000  # and at most 1000 metrics


def stored_run_id(path: Path) -> str | None:
    """The MLflow run id kept in a run (or sweep) directory's file (``{"tracking_uri",
    "run_id"}``; its name is rundir's or sweep's, sent by the run's process), if any."""
    try:
        return json.loads(path.read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keep(path: Path, uri: str, run_id: str) -> None:
    with files.replace(path) as f:
        json.dump({"tracking_uri": uri, "run_id": run_id}, f)
        f.write("\n")


def client(uri: str) -> Any:
    """An MlflowClient, with mlflow's and alembic's start-up chatter kept out of the log."""
    from mlflow.tracking import MlflowClient  # mlflow sets its loggers' levels on import

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    # a new database is created by the first client (its tables, then migrations): two jobs of
    # a sweep doing it at once fail ("table experiments already exists"), so one at a time.
    # flock on the file itself: SQLite's own locks are fcntl locks, which flock does not touch
    with _locked(db):
        mlflow = MlflowClient(tracking_uri=uri)
        mlflow.search_experiments(max_results=1)  # the store is opened (and made) here
        return mlflow


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for any other store)."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _experiment_id(mlflow: Any, name: str, uri: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    from mlflow.exceptions import MlflowException

    # a SQLite store keeps its artifacts beside the database; a server picks its own place
    db = sqlite_path(uri)
    location = (db.parent / "mlruns").as_uri() if db is not None else None
    try:  # its kind for MLflow's UI: model training, not GenAI (3.18 still opens on GenAI)
        return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
    except MlflowException:  # another job of the sweep created it first
        return mlflow.get_experiment_by_name(name).experiment_id


def _log(mlflow: Any, run_id: str, params: dict[str, str] = {}, tags: dict[str, Any] = {}) -> None:  # noqa: B006 - read only
    from mlflow.entities import Param, RunTag

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), CHUNK):
        mlflow.log_batch(run_id, params=items[i : i + CHUNK])
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(items), CHUNK):
        mlflow.log_batch(run_id, tags=items[i : i + CHUNK])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (a sweep's jobs), released when the block ends."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sweep_parent(
    mlflow: Any,
    uri: str,
    parent_file: Path,
    experiment_id: str,
    overrides: list[str],
    name: str | None = None,
) -> str:
    """The sweep's parent run id: made by the first job to ask, found by every other one."""
    sweep_dir = parent_file.parent
    with _locked(parent_file.with_name(f".{parent_file.stem}.lock")):
        found = stored_run_id(parent_file)
        if found is not None:
            return found
        run = mlflow.create_run(
            experiment_id, run_name=name or sweep_dir.name, tags={"sweep_dir": str(sweep_dir)}
        )
        _log(mlflow, run.info.run_id, {"sweep.overrides": " ".join(overrides)})
        _keep(parent_file, uri, run.info.run_id)
        return run.info.run_id


def context_tags(argv0: str | None, commit: str | None) -> dict[str, str]:
    """MLflow's standard context tags (user, source name and type, git commit), from MLflow's
    own tag resolvers as if they ran in the run's process (``argv0``: its command); the commit
    of dlrun's checkout when the resolvers find none."""
    from mlflow.tracking.context.registry import resolve_tags

    saved = sys.argv[0]
    sys.argv[0] = argv0 or saved
    try:
        tags = dict(resolve_tags())
    finally:
        sys.argv[0] = saved
    if commit and "mlflow.source.git.commit" not in tags:
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


def backfill(mlflow: Any, run_id: str, run_dir: Path, upto: int) -> int:
    """A resumed run: send what metrics.jsonl holds up to ``upto`` (the checkpoint's epoch) and
    the store lacks (a process killed before its last epochs reached the store). Returns how many
    values were sent."""
    rows = []
    with contextlib.suppress(OSError):
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                    rows.append(row)
    rows = [r for r in rows if r["epoch"] <= upto]
    stored: dict[str, set[int]] = {}
    missing = []
    for row in rows:
        for key, value in _values(row):
            if key not in stored:
                stored[key] = {m.step for m in mlflow.get_metric_history(run_id, key)}
            if row["epoch"] not in stored[key]:
                missing.append((row, key, value))
    if missing:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(shortest(v)), stamp, r["epoch"]) for r, k, v in missing]
        for i in range(0, len(metrics), METRICS_CHUNK):
            mlflow.log_batch(run_id, metrics=metrics[i : i + METRICS_CHUNK])
        log.info("sent %d values metrics.jsonl held and the store lacked", len(metrics))
    return len(missing)


def _values(row: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (f"{row['split']}/{key}", value)
        for key, value in row.items()
        if key not in KEYS and not isinstance(value, bool) and isinstance(value, int | float)
    ]


def open_run(mlflow: Any, start: dict[str, Any]) -> str:
    """Create the run (a sweep's child, a rerun's copy), or continue the one the directory has."""
    uri, run_dir = start["uri"], Path(start["run_dir"])
    params: dict[str, str] = start["params"]
    commit = git_commit()
    tags = {
        **start["tags"],
        **context_tags(start.get("argv0"), commit),
        "dlrun_version": metadata.version("dlrun"),
        "git_commit": commit,
        "run_dir": str(run_dir),
        "status": "running",
    }
    run_file = Path(start["run_file"])
    run_id = stored_run_id(run_file)
    if run_id is not None:  # a resume, or a sweep's job run again: continue that run
        run = mlflow.get_run(run_id)
        mlflow.update_run(run_id, status="RUNNING")
        old = run.data.params  # fixed once logged: a value changed by the resume becomes a tag
        tags.update({f"resumed.{k}": v for k, v in params.items() if k in old and old[k] != v})
        if start.get("resume_epoch") is not None:
            before = run.data.tags.get("resumed_from_epochs")
            tags["resumed_from_epochs"] = ",".join(
                filter(None, [before, str(start["resume_epoch"])])
            )
        _log(mlflow, run_id, {k: v for k, v in params.items() if k not in old}, tags)
        if start.get("resume_epoch") is not None:
            backfill(mlflow, run_id, run_dir, start["resume_epoch"])
        return run_id
    experiment_id = _experiment_id(mlflow, start["experiment"], uri)
    if start.get("parent_file"):
        tags["mlflow.parentRunId"] = sweep_parent(
            mlflow,
            uri,
            Path(start["parent_file"]),
            experiment_id,
            start["sweep_overrides"],
            start.get("parent_name"),
        )
    if start.get("reproduces"):
        tags["reproduces"] = start["reproduces"]
        source = stored_run_id(Path(start["reproduces_file"]))
        if source is not None:
            tags["reproduces_run_id"] = source
    run = mlflow.create_run(experiment_id, run_name=start.get("name") or run_dir.name, tags=tags)
    _keep(run_file, uri, run.info.run_id)
    _log(mlflow, run.info.run_id, params)
    return run.info.run_id


def log_rows(mlflow: Any, run_id: str, rows: list[list[Any]]) -> None:
    """Logged epochs' rows ([row, timestamp in ms] pairs) in log_batch calls of up to 1000
    metrics: one per epoch while the store keeps up, fewer, larger ones when epochs wait."""
    from mlflow.entities import Metric

    metrics = [
        Metric(key, float(shortest(value)), stamp, row["epoch"])
        for row, stamp in rows
        for key, value in _values(row)
    ]
    for i in range(0, len(metrics), METRICS_CHUNK):
        mlflow.log_batch(run_id, metrics=metrics[i : i + METRICS_CHUNK])


def end_run(mlflow: Any, run_id: str, run_dir: Path, status: str, checkpoints: bool) -> None:
    """The artifacts (plots/, summary.json, the composed config), the status, the end."""
    if (run_dir / "plots").is_dir():
        mlflow.log_artifacts(run_id, str(run_dir / "plots"), "plots")
    for path in (run_dir / "summary.json", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            mlflow.log_artifact(run_id, str(path))
    if checkpoints and (run_dir / "checkpoints").is_dir():
        mlflow.log_artifacts(run_id, str(run_dir / "checkpoints"), "checkpoints")
    tags = {"status": status}
    with contextlib.suppress(OSError, ValueError, AttributeError):  # the device it really ran on
        device = json.loads((run_dir / "summary.json").read_text()).get("device")
        if device:
            tags["device"] = device
    _log(mlflow, run_id, tags=tags)
    mlflow.set_terminated(run_id, STATUS.get(status, "FAILED"))


def finish_sweep(
    parent_file: Path,
    best: float | None,
    objective_name: str | None,
    status: str = "completed",
    best_file: Path | None = None,
    maximize: bool | None = None,
) -> str | None:
    """End a sweep's parent run with its best objective and the child that reached it
    (``best_file``: that job's run-id file) (the sweep's end calls this)."""
    run_id = stored_run_id(parent_file)
    if run_id is None:
        return None
    mlflow = client(json.loads(parent_file.read_text())["tracking_uri"])
    tags = {"status": status}
    if best is not None and objective_name:
        mlflow.log_metric(run_id, f"best/{objective_name}", float(shortest(best)))
        direction = "" if maximize is None else f" ({'higher' if maximize else 'lower'} is better)"
        tags["objective"] = f"{objective_name}{direction}"
        tags["best_objective"] = repr(shortest(best))
    child = stored_run_id(best_file) if best_file is not None else None
    if child is not None:
        tags["best_run_id"] = child
        with contextlib.suppress(Exception):  # the name is a courtesy; the id is what counts
            tags["best_run"] = mlflow.get_run(child).info.run_name
    _log(mlflow, run_id, tags=tags)
    mlflow.set_terminated(run_id, STATUS.get(status, "FAILED"))
    return run_id


def _say(**message: Any) -> None:
    """An answer for the run's process, which may be gone (then the log has it all)."""
    with contextlib.suppress(OSError):
        print(json.dumps(message), flush=True)


def _log_to(path: Path) -> None:
    """This process's stderr (its log) into the run's dlrun.log, once the run names it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
        os.close(fd)


def main() -> None:
    """Serve one run: the messages on stdin, the answers on stdout, the log on stderr."""
    with contextlib.suppress(OSError):  # on a busy machine the training gets the CPU first
        os.nice(10)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
    )
    # a reader thread queues the run's messages while the store is slow (its start-up, a busy
    # database): the epochs that waited then go up together instead of one call each
    inbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def read() -> None:
        for line in iter(sys.stdin.readline, ""):
            inbox.put(line)
        inbox.put(None)  # stdin closed

    threading.Thread(target=read, daemon=True).start()
    first = inbox.get()
    if first is None:
        return
    message = json.loads(first)
    early = None  # started by the command: the store opens while the run sets up
    if "open" in message:
        with contextlib.suppress(Exception):  # a failure is met again, and logged, below
            early = message["open"], client(message["open"])
        first = inbox.get()
        if first is None:  # the run never reached its loop
            return
        message = json.loads(first)
        _log_to(Path(message["start"]["run_dir"]) / "dlrun.log")
    start = message["start"]
    mlflow = run_id = None
    try:
        mlflow = early[1] if early and early[0] == start["uri"] else client(start["uri"])
        run_id = open_run(mlflow, start)
        _say(run_id=run_id, experiment_id=mlflow.get_run(run_id).info.experiment_id)
    except Exception as exc:
        log.exception("could not start the run in %s", start["uri"])
        _say(error=f"could not start the run in {start['uri']}: {type(exc).__name__}: {exc}")
        mlflow = None
    status = "failed"  # stdin closed without an end: the run's process died
    closed = False
    while not closed:
        waiting = [inbox.get()]
        while not inbox.empty():
            waiting.append(inbox.get())
        rows: list[list[Any]] = []
        for line in waiting:
            if line is None:
                closed = True
                break
            message = json.loads(line)
            status = message.get("end", status)
            rows += message.get("rows", [])
        if mlflow is None or not rows:
            continue
        try:
            log_rows(mlflow, run_id, rows)
        except Exception as exc:  # one failure stops the logging, not the run
            log.exception("logging metrics failed; the run goes on")
            _say(error=f"logging metrics failed: {type(exc).__name__}: {exc}")
            mlflow = None
    if mlflow is not None:
        try:
            end_run(mlflow, run_id, Path(start["run_dir"]), status, start["log_checkpoints"])
            log.info("MLflow run %s ended %s", run_id, STATUS.get(status, "FAILED"))
        except Exception as exc:
            log.exception("ending the run failed")
            _say(error=f"ending the run failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
    logging.shutdown()
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    os._exit(0)  # done: the run waits for this exit, not for mlflow's interpreter teardown
