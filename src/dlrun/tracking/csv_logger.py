"""``logger=csv``: metrics.csv, the rows of metrics.jsonl as a table, one column per metric."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from dlrun.rundir import atomic as files
from dlrun.tracking.loggers import KEYS, Logger, RunContext


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


class Csv(Logger):
    """The ``csv`` logger: metrics.csv in the run directory."""

    name = "csv"

    def __init__(self, settings: Any, run: RunContext) -> None:
        super().__init__(settings, run)
        self.log = CsvLog(run.run_dir.metrics_csv, run.rows)

    def append(self, row: dict[str, Any]) -> None:
        self.log.append(row)

    def close(self) -> None:
        self.log.close()
