"""What a person sees while a run goes: a rich progress bar on a terminal, plain lines otherwise.

Everything shown also goes to the run log (the "dlrun" logger, which Hydra writes to dlrun.log).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dlrun.rundir.layout import LOG as LOG_NAME
from dlrun.terminal import Terminal, detach_stdout

log = logging.getLogger("dlrun")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return str(value)


def metrics_text(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items() if k != "time_s")


# the most epochs shown as plain lines (a notebook, a file, a pipe), whatever trainer.log_every:
# a long run's lines are thinned to about this many; dlrun.log has every one
PLAIN_EPOCHS = 20


class Console:
    def __init__(
        self, progress: bool, total_epochs: int, quiet: bool = False, sweep_job: bool = False
    ) -> None:
        """``quiet``: show nothing and log nothing (the other processes of a data-parallel run).
        ``progress`` False: no epoch shown, each still logged; ``sweep_job`` (a sweep says one
        line per job): no epoch line, and on a terminal a bar that goes when the job ends."""
        self.out = Terminal(highlight=False, soft_wrap=True, quiet=quiet)
        # called once when the output pipe closes (`dlrun ... | head`): the run stops at the end
        # of the epoch as if interrupted; what it shows from then on goes only to the log
        self.on_closed: Callable[[], None] | None = None
        self.quiet = quiet
        self.epochs_shown = progress and not sweep_job
        self.live = progress and sys.stdout.isatty() and not os.environ.get("CI") and not quiet
        self.transient = sweep_job  # a sweep job's bar goes when it ends: its line stays
        self.total = total_epochs
        self.width = len(str(total_epochs))
        self._every = max(1, -(-total_epochs // PLAIN_EPOCHS))  # plain lines: one epoch in so many
        self._plain_epoch: int | None = None  # the epoch whose lines are being shown
        self._next_plain = 0  # the next epoch shown from
        self._progress: Progress | None = None
        self._task = None
        self._shown: dict[str, str] = {}

    def print(self, text: str, style: str | None = None) -> None:
        if self.quiet:
            return
        log.info(text)
        self._show(text, style=style, markup=False)

    def _show(self, *objects: Any, **options: Any) -> None:
        try:
            self.out.print(*objects, **options)
        except BrokenPipeError:
            detach_stdout()
            self.out.quiet = True
            log.info("the output pipe closed: the rest is only in this log; training stops")
            if self.on_closed is not None:
                self.on_closed()

    def start(self, done: int) -> None:
        if not self.live:
            return
        self._progress = Progress(
            TextColumn("epoch"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.out,
            transient=self.transient,
        )
        self._task = self._progress.add_task("train", total=self.total, completed=done, metrics="")
        self._progress.start()

    def epoch(self, epoch: int, phase: str, metrics: dict[str, Any]) -> None:
        if self.quiet:
            return
        line = f"epoch {epoch:>{self.width}}/{self.total} {phase:<5} {metrics_text(metrics)}"
        log.info(line)
        if self._progress is not None:
            self._shown[phase] = f"{phase} {metrics_text(metrics)}"
            text = " | ".join(self._shown[p] for p in ("train", "val") if p in self._shown)
            self._progress.update(self._task, completed=epoch, metrics=text)
        elif self._plain_shown(epoch):
            self._show(line, markup=False, highlight=False)

    def _plain_shown(self, epoch: int) -> bool:
        """Whether an epoch's plain line is shown: about PLAIN_EPOCHS epochs a run, the last one
        always, each shown epoch with all its phases."""
        if not self.epochs_shown:
            return False
        if epoch == self._plain_epoch:
            return True
        if epoch == self.total or self._plain_epoch is None or epoch >= self._next_plain:
            self._plain_epoch = epoch
            self._next_plain = (epoch // self._every + 1) * self._every
            return True
        return False

    def advance(self, epoch: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=epoch)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def table(
        self,
        title: str,
        rows: list[tuple[str, ...]],
        header: tuple[str, ...],
        shown: int | None = None,
    ) -> None:
        """``shown``: at most that many rows on screen (a row says how many more); the log has
        every row."""
        if self.quiet:
            return
        for row in rows:
            log.info("%s: %s", title, " ".join(row))
        table = Table(title=title, title_justify="left")
        for col in header:
            table.add_column(col)
        cut = shown is not None and len(rows) > shown
        for row in rows[: shown - 1] if cut else rows:
            table.add_row(*row)
        if cut:
            table.add_row(f"... {len(rows) - shown + 1} more (all in {LOG_NAME})")
        self._show(table)
