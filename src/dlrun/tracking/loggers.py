"""Extra destinations for the metrics rows, besides metrics.jsonl: TensorBoard, CSV, MLflow.

Each logger receives every row that metrics.jsonl receives (``{"epoch", "split", <metrics>}``)
through :class:`dlrun.rundir.metrics_log.MetricsLog`; the loop knows nothing about them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Protocol

from dlrun.config.loggers import LoggerConfig
from dlrun.rundir import atomic as files
from dlrun.rundir.layout import RunDir

KEYS = ("epoch", "split")  # every row's coordinates; the rest are metrics


class Logger(Protocol):
    def append(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def open_loggers(
    cfg: LoggerConfig,
    run_dir: RunDir,
    rows: list[dict[str, Any]],
    resume_epoch: int | None,
    name: str | None = None,
    plain: dict[str, Any] | None = None,
) -> list[Logger]:
    """The chosen loggers, given the rows metrics.jsonl already holds (up to a resume's epoch);
    ``name`` the run's readable name, ``plain`` its config (TensorBoard's HPARAMS)."""
    chosen: list[Logger] = []
    if cfg.csv:
        chosen.append(CsvLog(run_dir.metrics_csv, rows))
    if cfg.tensorboard:
        folder = run_dir.tensorboard / folder_name(name) if name else run_dir.tensorboard
        settings = {k: v for k, v in flat_settings(plain or {}).items() if _hparam(k)}
        chosen.append(TensorBoardLog(folder, resume_epoch, settings, rows))
    # logger=mlflow is the run's own (dlrun.tracking.mlflow_run): it ends after the run
    return chosen


def folder_name(name: str) -> str:
    """The run's name as a folder name (TensorBoard lists a run by its folders): no ``/``."""
    return name.replace("/", "-").replace("\0", "").strip(". ") or "run"


def flat_settings(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"trainer.batch_size": 64, ...}``: lists as text, unset (None)
    values and off loggers left out, they say nothing about the run."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_settings(value, name + "."))
        elif value is None or (name.startswith("logger.") and value is False):
            continue
        else:
            out[name] = value if isinstance(value, bool | int | float | str) else str(value)
    return out


def _hparam(key: str) -> bool:
    """TensorBoard's HPARAMS: what the run trained with, not where its records went."""
    return not key.startswith("logger.") and key not in ("data.root", "task_file")


def _cell(value: Any) -> Any:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


class CsvLog:
    """metrics.csv: one row per metrics.jsonl row, one column per key (empty where a row has none).

    It is rewritten from the rows kept in metrics.jsonl when a run resumes (so rows trained again
    are never duplicated) and whenever a new column appears (e.g. the first validation row).
    """

    def __init__(self, path: Path, rows: list[dict[str, Any]]) -> None:
        self.path = path
        self.rows = list(rows)
        self.columns: list[str] = list(KEYS)
        self._file = None
        self._rewrite()

    def _add_columns(self, row: dict[str, Any]) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns += new
        return bool(new)

    def _rewrite(self) -> None:
        if self._file is not None:
            self._file.close()
        for row in self.rows:
            self._add_columns(row)
        with files.replace(self.path) as f:
            writer = csv.DictWriter(f, self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in r.items()} for r in self.rows)
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 - open for the run
        self._writer = csv.DictWriter(self._file, self.columns, lineterminator="\n")

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._add_columns(row):
            self._rewrite()
            return
        self._writer.writerow({k: _cell(v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardLog:
    """Scalars ``<split>/<metric>`` (e.g. ``val/accuracy``) at step = epoch, in event files.

    A resumed run's writer purges the events after the resume epoch (TensorBoard's own
    ``purge_step``), so epochs trained again are not shown twice. At the end, the run's settings
    and its last value of each metric go to TensorBoard's HPARAMS tab (one session per run).
    """

    def __init__(
        self,
        log_dir: Path,
        resume_epoch: int | None,
        settings: dict[str, Any] | None = None,
        rows: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_epoch is None else resume_epoch + 1
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge, flush_secs=10)
        self.settings = settings or {}
        self.last: dict[str, float] = {}  # tag -> its latest value, for HPARAMS
        for row in rows:
            self._scalars(row)

    def _scalars(self, row: dict[str, Any]) -> list[tuple[str, float]]:
        found = [
            (f"{row['split']}/{key}", value)
            for key, value in row.items()
            if key not in KEYS and not isinstance(value, bool) and isinstance(value, int | float)
        ]
        self.last.update(found)
        return found

    def append(self, row: dict[str, Any]) -> None:
        for tag, value in self._scalars(row):
            self.writer.add_scalar(tag, value, row["epoch"])

    def close(self) -> None:
        if self.settings:
            from torch.utils.tensorboard.summary import hparams

            metrics = {k: v for k, v in self.last.items() if not k.endswith("/time_s")}
            for summary in hparams(self.settings, metrics):
                self.writer.file_writer.add_summary(summary)
        self.writer.close()
