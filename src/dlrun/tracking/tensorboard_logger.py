"""``logger=tensorboard``: TensorBoard event files in <run dir>/tensorboard/<run name>/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrun.tracking.loggers import KEYS, Logger, RunContext, flat_settings, folder_name


class TensorBoard(Logger):
    """The ``tensorboard`` logger; its settings in HPARAMS are what the run trained with."""

    name = "tensorboard"
    needs = "tensorboard"

    def __init__(self, settings: Any, run: RunContext) -> None:
        super().__init__(settings, run)
        root = run.run_dir.tensorboard
        folder = root / folder_name(run.name) if run.name else root
        hparams = {k: v for k, v in flat_settings(run.plain).items() if _hparam(k)}
        self.log = TensorBoardLog(folder, run.resume_epoch, hparams, run.rows)

    def append(self, row: dict[str, Any]) -> None:
        self.log.append(row)

    def close(self) -> None:
        self.log.close()


def _hparam(key: str) -> bool:
    """TensorBoard's HPARAMS: what the run trained with, not where its records went."""
    return not key.startswith("logger.") and key not in ("data.root", "task_file")


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
