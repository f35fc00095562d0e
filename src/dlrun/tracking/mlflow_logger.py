"""``logger=mlflow``: runs in an MLflow tracking store, reached through the logger API only.

Its settings are ``logger.mlflow.*``; the command refuses an unusable store and starts the
worker that opens it (:meth:`MLflow.prepare`, dlrun.tracking.early), the run's loop feeds it
(dlrun.tracking.mlflow_run's MlflowRun), and a sweep's end ends the sweep's parent run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import check as _check
from dlrun.tracking.loggers import Logger, RunContext

# what MLflow accepts as a tracking URI: a database, a server, or a directory (file: or a path)
_TRACKING_URI = re.compile(
    r"(sqlite|postgresql|mysql|mssql|https?|file|databricks)(\+\w+)?:.*|[^:]+"
)


@dataclass
class MLflowConfig:
    """``logger=mlflow`` (conf/logger/mlflow.yaml): runs in an MLflow tracking store."""

    enabled: bool = False
    # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory (artifacts
    # beside it in mlruns/); or a tracking server, http://127.0.0.1:5000
    tracking_uri: str | None = None
    experiment: str | None = None  # None: the task's name
    log_checkpoints: bool = False  # checkpoints/ as artifacts too (they can be large)

    def __post_init__(self) -> None:
        uri = self.tracking_uri
        _check(
            uri is None or bool(_TRACKING_URI.fullmatch(uri)),
            "logger.mlflow.tracking_uri",
            "sqlite:///<file>, http(s)://<host>:<port>, a database URL or a directory",
            uri,
        )
        _check(
            self.experiment is None or bool(self.experiment.strip()),
            "logger.mlflow.experiment",
            "a non-empty name (or null: the task's name)",
            self.experiment,
        )


class MLflow(Logger):
    """One MLflow run per run directory (a sweep's jobs nested in the sweep's parent run)."""

    name = "mlflow"
    settings = MLflowConfig
    needs = "mlflow"

    def __init__(self, settings: MLflowConfig, run: RunContext) -> None:
        from dlrun.tracking.mlflow_run import MlflowRun

        super().__init__(settings, run)
        self.tracking = MlflowRun(
            settings,
            run.run_dir.path,
            run.plain,
            run.tags,
            experiment=run.task,
            sweep_dir=run.sweep_dir,
            sweep_overrides=run.sweep_overrides,
            reproduces=run.reproduces,
            resume_epoch=run.resume_epoch,
            active=run.writes,  # the other ranks' do nothing
            name=run.name,
            parent_name=run.parent_name,
            worker=run.early,
        )

    @classmethod
    def prepare(cls, settings: MLflowConfig, main: bool) -> Any:
        """An unusable store: one line, before any work; else its worker, started now, opens
        the store while the run imports torch and sets up."""
        from dlrun.tracking import early
        from dlrun.tracking.mlflow_run import tracking_uri

        return early.prepare(tracking_uri(settings), main)

    @classmethod
    def open(cls, settings: MLflowConfig, run: RunContext) -> Logger | None:
        return cls(settings, run)  # on every rank: the run's end waits for it on each

    @classmethod
    def end_sweep(cls, sweep_dir: Path, manifest: dict[str, Any], status: str | None) -> None:
        from dlrun.tracking.mlflow_run import end_sweep

        end_sweep(sweep_dir, manifest, status)

    @property
    def error(self) -> str | None:  # type: ignore[override]
        return self.tracking.error

    def append(self, row: dict[str, Any]) -> None:
        self.tracking.append(row)

    def close(self) -> None:
        self.tracking.close()

    def finish(self, status: str) -> None:
        self.tracking.finish(status, self.run.say)

    def where(self) -> str | None:
        return self.tracking.where()
