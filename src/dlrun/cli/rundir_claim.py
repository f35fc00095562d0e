"""A single run's claim on its directory, made before Hydra writes anything into it.

Hydra makes the run directory and writes its .hydra/ record before dlrun's task function runs.
A callback Hydra calls first notes what exists there (a refusal then removes only what this
invocation created, never a directory that was there before it) and takes the directory's
writer lock (:mod:`dlrun.rundir.lock`): a second writer is refused having changed nothing.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlrun.engine import distributed
from dlrun.errors import DlrunError
from dlrun.rundir import atomic as files
from dlrun.rundir import layout as rundir
from dlrun.rundir import lock as dirlock
from dlrun.rundir.layout import RunDir
from dlrun.sweeps import manifest as multirun


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
        before, the records it added (a refused resume's own record is run.py's to remove).
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


before: Before | None = None  # this invocation's, once Hydra has composed its config
command: str | None = None  # the command as typed: what a lock's holder record shows


class RunDirCallback(Callback):
    """Before Hydra writes anything into a single run's directory: note what exists, take the
    directory's writer lock (a second writer is refused here, having changed nothing) and
    refuse a new run into a directory that holds a run (checked again under the lock)."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        global before
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))  # ${now:} is cached
        before = Before.look(run_dir)
        if not distributed.is_main():  # under torchrun rank 0 holds the lock for all ranks
            return
        try:
            dirlock.acquire(run_dir, command=command)
            if config.get("resume") is None and RunDir(run_dir).holds_run():
                raise used(run_dir)
        except DlrunError as exc:
            raise multirun.Refused(exc) from None
        except OSError as exc:
            resuming = config.get("resume") is not None
            raise multirun.Refused(unwritable(exc, resuming, run_dir)) from None


def elsewhere(resuming: bool) -> str:
    """The way out of a run directory that cannot be written, besides fixing the disk."""
    if resuming:
        return "copy the run directory to a writable disk and resume the copy"
    return "choose another with hydra.run.dir=... (or hydra.sweep.dir=... with -m)"


def unwritable(exc: OSError, resuming: bool = False, run_dir: Path | None = None) -> DlrunError:
    """``exc`` writing ``run_dir`` as one line, naming the disk that failed (not the cwd's)."""
    where = Path(exc.filename).parent if exc.filename else (run_dir or Path.cwd())
    return DlrunError(
        f"cannot write the run directory: {files.describe(exc)}; {files.remedy(exc, where)}, "
        f"or {elsewhere(resuming)}"
    )


def used(run_dir: Path) -> DlrunError:
    return DlrunError(
        f"hydra.run.dir={shlex.quote(str(run_dir))} already holds a run; continue it with "
        f"{shlex.quote(f'resume={run_dir}')}, or choose a new directory"
    )
