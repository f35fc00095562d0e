"""The metrics log a run appends to: metrics.jsonl, and the loggers that take the same rows.

File names and formats are :mod:`dlrun.rundir.layout`'s; this is the writer that keeps a run's rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlrun.rundir import atomic as files
from dlrun.rundir.records import metrics_line


class MetricsLog:
    """metrics.jsonl: one row per logged phase of an epoch, appended and flushed as it happens."""

    def __init__(self, path: Path | None, kept: list[dict[str, Any]] | None = None) -> None:
        """``path`` None keeps the rows in memory only (the ranks that write nothing).

        ``kept``: a resumed run's rows up to its checkpoint's epoch; the file is rewritten to
        hold just those, so the epochs trained again are not logged twice.
        """
        self.path = path
        self.rows: list[dict[str, Any]] = list(kept or [])
        if kept is not None and path is not None and path.exists():
            with files.replace(path) as f:
                f.writelines(metrics_line(r) for r in self.rows)
        self._file = open(path, "a") if path is not None else None  # noqa: SIM115 - for the run
        self.loggers: list[Any] = []  # dlrun.tracking.loggers: each gets every row written here

    def append(self, epoch: int, split: str, metrics: dict[str, float]) -> dict[str, Any]:
        row = {"epoch": epoch, "split": split, **metrics}
        self.rows.append(row)
        if self._file is not None:
            with self._naming_the_file():
                self._file.write(metrics_line(row))
                self._file.flush()
        for logger in self.loggers:
            logger.append(row)
        return row

    def last(self, split: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.rows) if r["split"] == split), None)

    @contextlib.contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        """A full disk's OSError names metrics.jsonl (a file object's write does not)."""
        try:
            yield
        except OSError as exc:
            exc.filename = exc.filename or str(self.path)
            raise

    def close(self) -> None:
        if self._file is not None:
            with self._naming_the_file():  # the rows still buffered after a failed write
                self._file.close()
        for logger in self.loggers:
            logger.close()
