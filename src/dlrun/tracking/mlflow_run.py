"""MLflow tracking for one run: ``logger=mlflow``, one MLflow run per run directory.

The run's process never imports mlflow: ``dlrun --help`` and config errors stay fast, and
mlflow's import and the store's set-up (seconds of CPU) run in a process of their own
(dlrun.tracking.worker), started by the command before torch's import (dlrun.tracking.early),
instead of holding the training loop's GIL. What can be checked without mlflow (the server
answers, the database's directory is writable) is checked before that
(dlrun.tracking.store_check), so an unusable store stops the run in one line; anything failing
later is logged in dlrun.log and kept in ``error`` while the run goes on: metrics.jsonl stays the
record of truth.

The run id is kept in the run directory (layout.MLFLOW), so a resumed run continues its MLflow
run; a sweep's parent run id is kept in the sweep directory (layout.MLFLOW_PARENT, created once
under a file lock by the first job), so jobs in other processes (joblib, submitit, Optuna trials)
find it, and the sweep's end (:func:`end_sweep`, called by the command) ends it with the best
objective.

The logger ``mlflow`` (dlrun.tracking.mlflow_logger) opens an :class:`MlflowRun` when the
loop starts, feeds it metrics.jsonl's rows, and finishes it once summary.json and plots/ are
final.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.rundir.layout import MLFLOW_PARENT, RunDir
from dlrun.tracking import worker as tracking_worker
from dlrun.tracking.loggers import flat_settings
from dlrun.tracking.worker import STATUS, sqlite_path, stored_run_id

if TYPE_CHECKING:
    from dlrun.tracking.early import Early
    from dlrun.tracking.mlflow_logger import MLflowConfig

log = logging.getLogger("dlrun")

FINISH_WAIT_S = 120.0  # the most a run's end waits for the store
SLOW_S = 1.0  # a wait longer than this at the end is said on the console


def run_id(run_dir: Path) -> str | None:
    """The MLflow run a run directory is (None before its first ``logger=mlflow`` run)."""
    return stored_run_id(RunDir(run_dir).mlflow)


def parent_run_id(sweep_dir: Path) -> str | None:
    """A sweep's parent run (None when no job logged to MLflow)."""
    return stored_run_id(sweep_dir / MLFLOW_PARENT)


def finish_sweep(
    sweep_dir: Path,
    best: float | None,
    objective_name: str | None,
    status: str = "completed",
    best_dir: Path | None = None,
    maximize: bool | None = None,
) -> str | None:
    """End a sweep's parent run (if it has one): its best objective and the child that reached
    it (``best_dir``: that job's directory), FINISHED/FAILED/KILLED.

    It imports mlflow in this process: it runs once, after the sweep's last job."""
    parent = sweep_dir / MLFLOW_PARENT
    if not parent.is_file():
        return None
    best_file = RunDir(best_dir).mlflow if best_dir is not None else None
    return tracking_worker.finish_sweep(parent, best, objective_name, status, best_file, maximize)


def end_sweep(sweep_dir: Path, manifest: dict[str, Any], status: str | None = None) -> None:
    """End the sweep's MLflow parent run (when a job made one) with the best job's objective;
    FAILED if a job failed. A store failing here is a warning: the sweep's records stand."""
    if not (sweep_dir / MLFLOW_PARENT).is_file():
        return
    scored = []
    for entry in manifest["jobs"]:
        summary = RunDir(sweep_dir / entry["dir"]).read_summary()
        if summary is not None and summary.status == "completed" and summary.objective is not None:
            scored.append((summary, sweep_dir / entry["dir"]))
    best, best_dir = None, None
    if scored:
        pick = max if scored[0][0].maximize else min
        best, best_dir = pick(scored, key=lambda s: s[0].objective)
    if status is None:
        status = "failed" if manifest["counts"].get("failed") else "completed"
    try:
        finish_sweep(
            sweep_dir,
            best.objective if best else None,
            best.objective_name if best else None,
            status,
            best_dir,
            best.maximize if best else None,
        )
    except Exception as exc:  # the store went away during the sweep
        log.warning("mlflow: the sweep's parent run was not ended: %s", exc)


def tracking_uri(settings: MLflowConfig, cwd: Path | None = None) -> str:
    """The store: the setting, else $MLFLOW_TRACKING_URI, else mlflow.db in the working dir."""
    if settings.tracking_uri:
        return settings.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(cwd or Path.cwd()).resolve() / 'mlflow.db'}"


def flatten(config: dict[str, Any], in_use: dict[str, str] | None = None) -> dict[str, str]:
    """A nested config as MLflow params: ``{"trainer.batch_size": "64", ...}``, without the
    unset (None) values and the loggers not chosen; ``in_use`` replaces settings by the values
    the run used (the store, the experiment)."""
    return {k: str(v) for k, v in {**flat_settings(config), **(in_use or {})}.items()}


def ui_hint(uri: str, experiment_id: str | None, run_id: str) -> str:
    """Where a person sees the run: the server's page for it, or the `mlflow ui` command."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else ""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    store = f"sqlite:///{db}" if (db := sqlite_path(uri)) is not None else uri
    return f"mlflow ui --backend-store-uri {store}, then http://127.0.0.1:5000/{page}"


class MlflowRun:
    """One run directory's MLflow run; rows in with ``append``, the end state with ``finish``.

    ``active`` False (ranks > 0 under torchrun) makes every method do nothing. ``sweep_dir``
    makes the run a nested child of the sweep's parent run; ``reproduces`` (a run directory)
    tags a ``dlrun-rerun`` with the run it repeats. After ``finish``: ``run_id``, and ``error``,
    the first failure after the start (for summary.json), or None.
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
        name: str | None = None,
        parent_name: str | None = None,
        worker: Early | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.error: str | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.status: str | None = None
        self.end_wait_s = 0.0  # how long finish() waited for the store (its start-up included)
        self._pending: list[list[Any]] = []
        self._unsent = bytearray()
        self._proc: subprocess.Popen | None = None
        if not active:
            return
        self.uri = tracking_uri(settings)  # checked by the command before any work (check_store)
        self.experiment = settings.experiment or experiment
        in_use = {
            "logger.mlflow.tracking_uri": self.uri,
            "logger.mlflow.experiment": self.experiment,
        }
        start = {
            "uri": self.uri,
            "run_dir": str(run_dir),
            "run_file": str(RunDir(run_dir).mlflow),
            "params": flatten(params, in_use),
            "tags": {k: str(v) for k, v in tags.items()},
            "experiment": self.experiment,
            "name": name,
            "parent_name": parent_name,
            "argv0": sys.argv[0],
            "parent_file": str(sweep_dir / MLFLOW_PARENT) if sweep_dir else None,
            "sweep_overrides": sweep_overrides or [],
            "reproduces": str(reproduces) if reproduces else None,
            "reproduces_file": str(RunDir(reproduces).mlflow) if reproduces else None,
            "resume_epoch": resume_epoch,
            "log_checkpoints": settings.log_checkpoints,
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        early = worker.take(self.uri) if worker else None  # the command's: the store is opening
        db = sqlite_path(self.uri)
        self.new_store = early.new_store if early else db is not None and not db.exists()
        if early is not None:
            self._proc = early.proc
        else:
            with open(run_dir / "dlrun.log", "a") as run_log:  # the worker's log: the run's
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "dlrun.tracking.worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=run_log,
                    start_new_session=True,  # Ctrl-C reaches dlrun, which ends the run KILLED
                )
        assert self._proc.stdin is not None
        # never block the loop on a slow store: what the pipe cannot take now waits here
        os.set_blocking(self._proc.stdin.fileno(), False)
        self._send({"start": start})

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._unsent += (json.dumps(message) + "\n").encode()
        try:
            sent = os.write(self._proc.stdin.fileno(), self._unsent)
        except BlockingIOError:
            return
        except OSError as exc:  # the worker is gone (it says why at the end)
            self._unsent.clear()
            self._note(f"the MLflow worker stopped: {exc}")
            return
        del self._unsent[:sent]

    def append(self, row: dict[str, Any]) -> None:
        """A metrics.jsonl row; an epoch's rows go to the store together, in one log_batch."""
        if self._proc is None:
            return
        if self._pending and self._pending[-1][0]["epoch"] != row["epoch"]:
            self._flush()
        self._pending.append([row, int(time.time() * 1000)])

    def _flush(self) -> None:
        if self._pending:
            self._send({"rows": self._pending})
            self._pending = []

    def finish(self, status: str, say: Callable[[str], None] | None = None) -> None:
        """End the run: completed -> FINISHED, failed/diverged -> FAILED, interrupted -> KILLED.

        Called once summary.json and plots/ are written, so they go up as artifacts. It waits
        for the store (at most FINISH_WAIT_S), and ``say``s so once when that is slow (a new
        store is being made); a second call does nothing.
        """
        if self._proc is None or self.status is not None:
            return
        self.status = status
        self._flush()
        self._send({"end": status})
        waited = time.perf_counter()
        assert self._proc.stdin is not None
        os.set_blocking(self._proc.stdin.fileno(), True)
        try:
            try:
                out, _ = self._proc.communicate(bytes(self._unsent), timeout=SLOW_S)
            except subprocess.TimeoutExpired:
                if say is not None:
                    say(self._waiting_line())
                out, _ = self._proc.communicate(timeout=FINISH_WAIT_S - SLOW_S)
        except subprocess.TimeoutExpired:  # it goes on by itself; the run does not wait longer
            self._note(f"the store did not answer within {FINISH_WAIT_S:.0f}s at the end")
            return
        except OSError as exc:
            self._note(f"the MLflow worker stopped: {exc}")
            return
        finally:
            self.end_wait_s = time.perf_counter() - waited
        for line in out.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                answer = json.loads(line)
                self.run_id = answer.get("run_id", self.run_id)
                self.experiment_id = answer.get("experiment_id", self.experiment_id)
                if "error" in answer:
                    self._note(answer["error"].splitlines()[0])
        if self._proc.returncode and self.error is None:
            self._note(f"the MLflow worker exited with code {self._proc.returncode}")
        log.info(
            "mlflow: run %s ended %s (waited %.2fs for the store)",
            self.run_id,
            STATUS.get(status, "FAILED"),
            self.end_wait_s,
        )

    def _waiting_line(self) -> str:
        if self.new_store:
            return f"mlflow: creating the store {self.uri} (MLflow sets up a new database once)"
        return f"mlflow: waiting for the store {self.uri}"

    def where(self) -> str | None:
        """The closing line that says where the run is in MLflow (None: no run)."""
        if self.run_id is None:
            return None
        hint = ui_hint(self.uri, self.experiment_id, self.run_id)
        return f"mlflow: run {self.run_id} in experiment {self.experiment!r}; see it: {hint}"

    def close(self) -> None:
        """As a metrics logger, when the loop ends: the last epoch's rows go now; the run ends
        with :meth:`finish`, once the run's own records are final."""
        if self._proc is not None and self.status is None:
            self._flush()

    def _note(self, what: str) -> None:
        if self.error is None:
            self.error = what
        log.warning("mlflow: %s; the run goes on (metrics.jsonl holds every row)", what)
