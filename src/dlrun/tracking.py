"""MLflow tracking: one MLflow run per run directory, holding what metrics.jsonl holds.

mlflow is imported only in the worker thread, never at module level: ``dlrun --help`` and config
errors never load it, and its slow import and the store's set-up (a second or more) overlap the
first epochs instead of delaying them. What can be checked without mlflow (the server answers,
the database's directory is writable) is checked before training, so a store that cannot be used
stops the run in one line; anything that fails later is logged and kept in ``error`` while the
run goes on: metrics.jsonl stays the record of truth.

The run id is kept in the run directory (``mlflow.json``), so a resumed run continues its MLflow
run; a sweep's parent run id is kept in the sweep directory (``mlflow-parent.json``, created once
under a file lock), so jobs in other processes (joblib, submitit, Optuna trials) find it.
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from dlrun import files
from dlrun.errors import DlrunError
from dlrun.schema import MLflowConfig

log = logging.getLogger("dlrun")

RUN_FILE = "mlflow.json"  # in a run directory: {"tracking_uri", "run_id"}
PARENT_FILE = "mlflow-parent.json"  # in a sweep directory: {"tracking_uri", "run_id"}
# dlrun's end states -> MLflow's run status
STATUS = {
    "completed": "FINISHED",
    "failed": "FAILED",
    "diverged": "FAILED",
    "interrupted": "KILLED",
}
KEYS = ("epoch", "split")  # every metrics row's coordinates; the rest are metrics
CHUNK = 100  # MLflow takes at most 100 params or tags in one log_batch
FINISH_WAIT_S = 120.0  # the most a run's end waits for the store


def tracking_uri(settings: MLflowConfig, cwd: Path | None = None) -> str:
    """The store: the setting, else $MLFLOW_TRACKING_URI, else mlflow.db in the working dir."""
    if settings.tracking_uri:
        return settings.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(cwd or Path.cwd()).resolve() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _refuse(uri: str, why: str) -> DlrunError:
    return DlrunError(
        f"logger.mlflow.tracking_uri={uri} cannot be used: {why}; expected a running tracking "
        "server or a writable directory (logger.mlflow.tracking_uri=, MLFLOW_TRACKING_URI)"
    )


def check_store(uri: str, timeout_s: float = 5.0) -> None:
    """Refuse, in one line, a store that cannot be reached or written (without importing mlflow)."""
    if uri.startswith(("http://", "https://")):
        try:  # the tracking server's own health endpoint
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
                if r.status != 200:
                    raise _refuse(uri, f"the server answered {r.status}")
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
            reason = getattr(exc, "reason", exc)
            raise _refuse(uri, f"the tracking server does not answer ({reason})") from None
        return
    db = _sqlite_path(uri)
    if db is not None:
        where = db.parent
    elif uri.startswith("file:"):  # a directory of runs (file:///abs/path)
        where = Path("/" + uri[len("file:") :].lstrip("/"))
    elif ":" not in uri:  # a plain directory
        where = Path(uri)
    else:
        return  # another database: mlflow says what is wrong when the worker connects
    if not where.is_dir():
        raise _refuse(uri, f"{where} is not a directory")
    if not os.access(where, os.W_OK) or (
        db is not None and db.exists() and not os.access(db, os.W_OK)
    ):
        raise _refuse(uri, f"{db if db is not None and db.exists() else where} is not writable")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: ``{"trainer.batch_size": "64", ...}``."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out


def stored_run_id(directory: Path, name: str = RUN_FILE) -> str | None:
    """The MLflow run id kept in a run (or sweep) directory, if any."""
    try:
        return json.loads((directory / name).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keep(directory: Path, name: str, uri: str, run_id: str) -> None:
    with files.replace(directory / name) as f:
        json.dump({"tracking_uri": uri, "run_id": run_id}, f)
        f.write("\n")


def _client(uri: str) -> Any:
    """An MlflowClient, with mlflow's and alembic's start-up chatter kept out of dlrun's console."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    from mlflow.exceptions import MlflowException

    db = _sqlite_path(uri)  # artifacts beside the database (a server picks its own place)
    location = (db.parent / "mlruns").as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), CHUNK):
        client.log_batch(run_id, params=items[i : i + CHUNK])


def _set_tags(client: Any, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(items), CHUNK):
        client.log_batch(run_id, tags=items[i : i + CHUNK])


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (the sweep's jobs), released when the block ends."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sweep_parent(
    client: Any, uri: str, sweep_dir: Path, experiment_id: str, overrides: list[str]
) -> str:
    """The sweep's parent run id: made by the first job to ask, found by every other one."""
    with _locked(sweep_dir / (PARENT_FILE + ".lock")):
        found = stored_run_id(sweep_dir, PARENT_FILE)
        if found is not None:
            return found
        run = client.create_run(
            experiment_id, run_name=sweep_dir.name, tags={"sweep_dir": str(sweep_dir)}
        )
        _log_params(client, run.info.run_id, {"sweep.overrides": " ".join(overrides)})
        _keep(sweep_dir, PARENT_FILE, uri, run.info.run_id)
        return run.info.run_id


def finish_sweep(
    settings: MLflowConfig,
    sweep_dir: Path,
    best: float | None,
    objective_name: str | None,
    status: str = "completed",
) -> str | None:
    """End a sweep's parent run with its best objective (the sweep's end calls this once)."""
    run_id = stored_run_id(sweep_dir, PARENT_FILE)
    if run_id is None:
        return None
    uri = json.loads((sweep_dir / PARENT_FILE).read_text())["tracking_uri"]
    client = _client(uri)
    if best is not None and objective_name:
        client.log_metric(run_id, f"best/{objective_name}", float(best))
    client.set_tag(run_id, "status", status)
    client.set_terminated(run_id, STATUS.get(status, "FAILED"))
    return run_id


class MlflowRun:
    """One run directory's MLflow run; rows in with ``append``, the end state with ``finish``.

    ``active`` False (ranks > 0 under torchrun) makes every method do nothing. ``sweep_dir``
    makes the run a nested child of the sweep's parent run; ``reproduces`` (a run directory)
    tags a ``dlrun-rerun`` with the run it repeats. ``error`` holds the first failure after the
    start, for summary.json; ``run_id`` is known once the worker has opened the run.
    """

    def __init__(
        self,
        settings: MLflowConfig,
        run_dir: Path,
        params: dict[str, Any],
        tags: dict[str, Any],
        *,
        experiment: str,
        sweep_dir: Path | None = None,
        sweep_overrides: list[str] | None = None,
        reproduces: Path | None = None,
        resume_epoch: int | None = None,
        active: bool = True,
    ) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.error: str | None = None
        self.run_id: str | None = None
        self.status: str | None = None
        self._pending: list[tuple[dict[str, Any], int]] = []
        self._thread: threading.Thread | None = None
        if not active:
            return
        self.uri = tracking_uri(settings)
        check_store(self.uri)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        start = {
            "params": flatten(params),
            "tags": {k: str(v) for k, v in tags.items()},
            "experiment": settings.experiment or experiment,
            "sweep_dir": sweep_dir,
            "sweep_overrides": sweep_overrides or [],
            "reproduces": reproduces,
            "resume_epoch": resume_epoch,
        }
        self._thread = threading.Thread(
            target=self._work, args=(start,), name="dlrun-mlflow", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ the caller's side

    def append(self, row: dict[str, Any]) -> None:
        """A metrics.jsonl row; an epoch's rows go to the store together, in one log_batch."""
        if self._thread is None:
            return
        if self._pending and self._pending[-1][0]["epoch"] != row["epoch"]:
            self._flush()
        self._pending.append((row, int(time.time() * 1000)))

    def _flush(self) -> None:
        if self._pending:
            self._queue.put(("rows", self._pending))
            self._pending = []

    def finish(self, status: str) -> None:
        """End the run: completed -> FINISHED, failed/diverged -> FAILED, interrupted -> KILLED.

        Called once summary.json and plots/ are written, so they go up as artifacts. It waits
        for the store (at most FINISH_WAIT_S); a second call does nothing.
        """
        if self._thread is None or self.status is not None:
            return
        self.status = status
        self._flush()
        self._queue.put(("end", status))
        self._thread.join(FINISH_WAIT_S)
        if self._thread.is_alive():
            self._note(f"the store did not answer within {FINISH_WAIT_S:.0f}s at the end")

    def close(self) -> None:
        """As a metrics logger: end with the state the run is leaving in (an exception or not)."""
        exc = sys.exc_info()[1]
        if exc is None:
            self.finish("completed")
        else:
            self.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")

    def _note(self, what: str) -> None:
        if self.error is None:
            self.error = what
        log.warning("mlflow: %s; the run goes on (metrics.jsonl holds every row)", what)

    # ------------------------------------------------------------------ the worker thread

    def _work(self, start: dict[str, Any]) -> None:
        client = None
        try:
            client = _client(self.uri)
            self.run_id = self._open(client, **start)
        except Exception as exc:
            self._note(f"could not start the run in {self.uri}: {type(exc).__name__}: {exc}")
            client = None
        while True:
            kind, payload = self._queue.get()
            if client is None:
                if kind == "end":
                    return
                continue
            try:
                if kind == "rows":
                    self._log_rows(client, payload)
                else:
                    self._end(client, payload)
                    return
            except Exception as exc:
                self._note(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                client = None  # one failure stops the logging, not the run
                if kind == "end":
                    return

    def _open(
        self,
        client: Any,
        params: dict[str, str],
        tags: dict[str, str],
        experiment: str,
        sweep_dir: Path | None,
        sweep_overrides: list[str],
        reproduces: Path | None,
        resume_epoch: int | None,
    ) -> str:
        from dlrun.metrics import git_commit

        tags = {
            **tags,
            "dlrun_version": metadata.version("dlrun"),
            "git_commit": git_commit(),
            "run_dir": str(self.run_dir),
            "status": "running",
        }
        run_id = stored_run_id(self.run_dir)
        if run_id is not None:  # a resume, or a sweep's job run again: continue that run
            return self._continue(client, run_id, params, tags, resume_epoch)
        experiment_id = _experiment_id(client, experiment, self.uri)
        if sweep_dir is not None:
            tags["mlflow.parentRunId"] = sweep_parent(
                client, self.uri, sweep_dir, experiment_id, sweep_overrides
            )
        if reproduces is not None:
            tags["reproduces"] = str(reproduces)
            source = stored_run_id(reproduces)
            if source is not None:
                tags["reproduces_run_id"] = source
        run = client.create_run(experiment_id, run_name=self.run_dir.name, tags=tags)
        _keep(self.run_dir, RUN_FILE, self.uri, run.info.run_id)
        _log_params(client, run.info.run_id, params)
        return run.info.run_id

    def _continue(
        self,
        client: Any,
        run_id: str,
        params: dict[str, str],
        tags: dict[str, str],
        resume_epoch: int | None,
    ) -> str:
        """Back to RUNNING; params are fixed once logged, so a changed value becomes a tag."""
        run = client.get_run(run_id)
        client.update_run(run_id, status="RUNNING")
        old = run.data.params
        _log_params(client, run_id, {k: v for k, v in params.items() if k not in old})
        changed = {f"resumed.{k}": v for k, v in params.items() if k in old and old[k] != v}
        if resume_epoch is not None:
            before = run.data.tags.get("resumed_from_epochs")
            changed["resumed_from_epochs"] = ",".join(filter(None, [before, str(resume_epoch)]))
        _set_tags(client, run_id, {**tags, **changed})
        return run_id

    def _log_rows(self, client: Any, rows: list[tuple[dict[str, Any], int]]) -> None:
        from mlflow.entities import Metric

        metrics = [
            Metric(f"{row['split']}/{key}", float(value), stamp, row["epoch"])
            for row, stamp in rows
            for key, value in row.items()
            if key not in KEYS and not isinstance(value, bool) and isinstance(value, int | float)
        ]
        if metrics:
            client.log_batch(self.run_id, metrics=metrics)

    def _end(self, client: Any, status: str) -> None:
        d = self.run_dir
        if (d / "plots").is_dir():
            client.log_artifacts(self.run_id, str(d / "plots"), "plots")
        for path in (d / "summary.json", d / ".hydra" / "config.yaml"):
            if path.is_file():
                client.log_artifact(self.run_id, str(path))
        if self.settings.log_checkpoints and (d / "checkpoints").is_dir():
            client.log_artifacts(self.run_id, str(d / "checkpoints"), "checkpoints")
        client.set_tag(self.run_id, "status", status)
        client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))


def for_run_dir(
    settings: MLflowConfig, run_dir: Path, resume_epoch: int | None = None, active: bool = True
) -> MlflowRun:
    """The run as Hydra recorded it in ``.hydra/``: params, tags, and its sweep if in one."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    assert isinstance(config, dict)
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    choices = OmegaConf.load(hydra_yaml).hydra.runtime.choices if hydra_yaml.is_file() else {}
    task = choices.get("task") or "dlrun"
    tags = {
        "task": task,
        "optimizer": choices.get("optimizer"),
        "device": config.get("device"),
        "seed": config.get("seed"),
    }
    sweep_dir = run_dir.parent if (run_dir.parent / "multirun.yaml").is_file() else None
    overrides = (
        [str(o) for o in OmegaConf.load(run_dir.parent / "multirun.yaml").hydra.overrides.task]
        if sweep_dir is not None
        else None
    )
    return MlflowRun(
        settings,
        run_dir,
        config,
        tags,
        experiment=task,
        sweep_dir=sweep_dir,
        sweep_overrides=overrides,
        resume_epoch=resume_epoch,
        active=active,
    )
