"""One `dlrun` command's own state, from its start to its end, as one value.

Hydra calls the task function and the callbacks with the config alone, so what they share with
the command (the command as typed, what was on disk before Hydra made the run directory, the
sweep directory and whether this command made it, the jobs run here and their failures) is an
:class:`Invocation` that :func:`started` makes for one call of the command and sets in a
ContextVar for that call only: nothing of one command is left for the next. A launcher's worker
process, which runs jobs for a command started elsewhere, gets a fresh one of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dlrun.rundir import atomic as files
from dlrun.rundir import layout as rundir
from dlrun.rundir import lock as dirlock

if TYPE_CHECKING:
    from dlrun.runs.interrupt import SweepStop


@dataclasses.dataclass
class Before:
    """What was on disk before Hydra made this single run's directory: a refusal removes only
    what this invocation created (never a directory or file that was there before it)."""

    run_dir: Path
    created: list[Path]  # the run directory and the parents it needed, deepest first
    names: set[str] | None  # what an existing run directory held; None: it is new
    records: set[str] = dataclasses.field(default_factory=set)  # what its .hydra/ held
    summary: tuple[int, ...] | None = None  # its summary.json's identity (a resume rewrites it)

    @classmethod
    def look(cls, run_dir: Path) -> Before:
        created = files.missing_dirs(run_dir)
        names = None if created else {p.name for p in run_dir.iterdir()}
        hydra = run_dir / rundir.HYDRA
        records = {p.name for p in hydra.iterdir()} if names and hydra.is_dir() else set()
        return cls(run_dir, created, names, records, _identity(run_dir / rundir.SUMMARY))

    def remove_created(self) -> None:
        """The refused run's traces: its new directories, or in a directory that was there
        before, the records it added (a refused resume's own record is runs/stages.py's to remove).
        Only while this process's lock file is provably still there: a directory removed and
        made again (by hand or by another run) is not this process's to touch."""
        if not dirlock.owns(self.run_dir) or not self.run_dir.is_dir():
            return
        added = {p.name for p in self.run_dir.iterdir()} - (self.names or set())
        if not added <= rundir.REFUSAL_RECORDS:  # the run started: its records stay
            return
        if self.names is None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            files.remove_empty(self.created[1:])  # outputs/<date>/, outputs/ made just now
            return
        for name in added:
            path = self.run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        # a refused resume's own record (.hydra/resume-<time>/, empty on a full disk): a reader
        # would find it damaged, or take it for a resume that happened
        hydra = self.run_dir / rundir.HYDRA
        resumed = _identity(self.run_dir / rundir.SUMMARY) != self.summary  # its record stays
        if self.names is not None and hydra.is_dir() and not resumed:
            for path in hydra.iterdir():
                if path.name not in self.records and path.name.startswith(rundir.RESUME_PREFIX):
                    shutil.rmtree(path, ignore_errors=True)


def _identity(path: Path) -> tuple[int, ...] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass
class Invocation:
    command: str | None = None  # as typed: what a lock's holder record shows
    main_pid: int = 0  # the process the command runs in (a launcher's workers run jobs in others)
    before: Before | None = None  # a single run's, once Hydra has composed its config
    sweep_dir: Path | None = None  # a sweep's directory, once Hydra has chosen it
    made_sweep_dir: bool = False  # this command made sweep_dir (a refusal may remove it)
    sweep_stop: SweepStop | None = None  # during a sweep, in the command's process
    ran: list[Path] = field(default_factory=list)  # the run directories of the jobs run here
    failures: list[BaseException] = field(default_factory=list)

    @property
    def in_main(self) -> bool:
        """Running in the command's own process (not a launcher's worker)."""
        return os.getpid() == self.main_pid


_CURRENT: ContextVar[Invocation | None] = ContextVar("dlrun_invocation", default=None)


def current() -> Invocation:
    """The command's state; in a launcher's worker process, that process's own."""
    invocation = _CURRENT.get()
    if invocation is None:
        invocation = Invocation()
        _CURRENT.set(invocation)
    return invocation


@contextlib.contextmanager
def started(command: str) -> Iterator[Invocation]:
    """A new command's state, current until it ends."""
    invocation = Invocation(command=command, main_pid=os.getpid())
    token = _CURRENT.set(invocation)
    try:
        yield invocation
    finally:
        _CURRENT.reset(token)
