"""Extra destinations for the metrics rows, besides metrics.jsonl: TensorBoard, CSV, MLflow.

Each logger receives every row that metrics.jsonl receives (``{"epoch", "split", <metrics>}``)
through :class:`dlrun.metrics.MetricsLog`; the loop knows nothing about them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Protocol

from dlrun import files
from dlrun.rundir import RunDir
from dlrun.schema import LoggerConfig

KEYS = ("epoch", "split")  # every row's coordinates; the rest are metrics


class Logger(Protocol):
    def append(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def open_loggers(
    cfg: LoggerConfig, run_dir: RunDir, rows: list[dict[str, Any]], resume_epoch: int | None
) -> list[Logger]:
    """The chosen loggers, given the rows metrics.jsonl already holds (up to a resume's epoch)."""
    chosen: list[Logger] = []
    if cfg.csv:
        chosen.append(CsvLog(run_dir.metrics_csv, rows))
    if cfg.tensorboard:
        chosen.append(TensorBoardLog(run_dir.tensorboard, resume_epoch))
    return chosen  # logger=mlflow is the run's own (dlrun.tracking): it ends after the run


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
    ``purge_step``), so epochs trained again are not shown twice.
    """

    def __init__(self, log_dir: Path, resume_epoch: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_epoch is None else resume_epoch + 1
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge, flush_secs=10)

    def append(self, row: dict[str, Any]) -> None:
        epoch, split = row["epoch"], row["split"]
        for key, value in row.items():
            if key in KEYS or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            self.writer.add_scalar(f"{split}/{key}", value, epoch)

    def close(self) -> None:
        self.writer.close()
