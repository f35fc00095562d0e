"""Hydra's callbacks: a single run's claim on its directory and a sweep's on its own, made
before Hydra writes anything into them.

Hydra makes the run directory and writes its .hydra/ record before dlrun's task function runs.
A callback Hydra calls first notes what exists there (a refusal then removes only what this
invocation created, never a directory that was there before it) and takes the directory's
writer lock (:mod:`dlrun.rundir.lock`): a second writer is refused having changed nothing. A
sweep's callback holds the sweep directory's lock and keeps its manifest (sweep.json) from the
first job to the last. What they learn goes into the command's :class:`Invocation`. Torch-free.
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlrun.cli.invocation import Before, Invocation, current
from dlrun.engine import distributed
from dlrun.errors import DlrunError
from dlrun.rundir import atomic as files
from dlrun.rundir import layout as rundir
from dlrun.rundir import lock as dirlock
from dlrun.rundir.layout import RunDir
from dlrun.sweeps import manifest as multirun
from dlrun.tracking import registry as loggers


class Refused(BaseException):  # noqa: N818 - carries the DlrunError out of Hydra
    """A sweep refused before its first job. Hydra turns a callback's Exception into a warning
    and goes on; this is not an Exception, so it stops the sweep and main() reports .error."""

    def __init__(self, error: DlrunError) -> None:
        super().__init__(str(error))
        self.error = error


def _claim(sweep_dir: Path, invocation: Invocation) -> None:
    """Hold the sweep directory's lock while this sweep runs. The same sweep command started
    again meanwhile shares it (each job has one writer: cli/main.py); another sweep is refused here,
    before Hydra writes any job's record (it would rewrite the records of the jobs the first
    one runs)."""
    try:
        dirlock.acquire(sweep_dir, command=invocation.command)
    except dirlock.Busy:
        holder = dirlock.holder(sweep_dir) or {}
        if holder.get("command") != invocation.command:
            raise Refused(
                DlrunError(
                    f"{sweep_dir} is being written by another sweep, "
                    f"{dirlock.describe(holder)}; give this one a new hydra.sweep.dir, or wait "
                    "for that one to end"
                )
            ) from None
    except OSError:
        return  # an unwritable sweep directory is said in one line by the sweep's first write


class ManifestCallback(Callback):
    """Hydra calls this in the process that runs the sweeper: the manifest exists from the start
    (with every planned job when the sweep's jobs are known up front) and is final at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        invocation = current()
        if str(config.hydra.sweeper.get("_target_", "")).startswith("hydra_plugins.dlrun_study."):
            # an optional extra: the Optuna sweeper (dlrun[sweep])
            from hydra_plugins.dlrun_study import shared_optuna

            shared_optuna.register()  # before Hydra instantiates the sweeper
            problem = shared_optuna.storage_problem(config.hydra.sweeper.get("storage"))
            if problem:
                raise Refused(DlrunError(problem))
        if str(config.hydra.launcher.get("_target_", "")).startswith("hydra_plugins.dlrun_ray."):
            # an optional extra: the Ray launcher (dlrun[ray])
            from hydra_plugins.dlrun_ray import ray_cluster

            missing = ray_cluster.register()  # before Hydra instantiates the launcher
            if missing:
                raise Refused(DlrunError(missing))
        sweep_dir = Path(config.hydra.sweep.dir)
        invocation.made_sweep_dir = not sweep_dir.exists()  # a refusal may remove what it made
        _claim(sweep_dir, invocation)
        invocation.sweep_dir = sweep_dir
        planned = multirun.planned_jobs(config)
        for num, overrides in enumerate(planned):  # before Hydra writes into any job directory
            try:
                multirun.job_records(sweep_dir / str(num), overrides)
            except DlrunError as exc:
                raise Refused(exc) from exc
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / rundir.STOP).unlink(missing_ok=True)  # an earlier, interrupted attempt's
        # a full disk: Hydra would print a callback's error as a warning, and the sweep's own
        # first write (multirun.yaml) fails next, in one line; the manifest is rewritten later
        with contextlib.suppress(OSError):
            multirun.update_manifest(sweep_dir, planned=planned)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        loggers.end_sweep(sweep_dir, multirun.update_manifest(sweep_dir))


class RunDirCallback(Callback):
    """Before Hydra writes anything into a single run's directory: note what exists, take the
    directory's writer lock (a second writer is refused here, having changed nothing) and
    refuse a new run into a directory that holds a run (checked again under the lock)."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        invocation = current()
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))  # ${now:} is cached
        invocation.before = Before.look(run_dir)
        if not distributed.is_main():  # under torchrun rank 0 holds the lock for all ranks
            return
        try:
            dirlock.acquire(run_dir, command=invocation.command)
            if config.get("resume") is None and RunDir(run_dir).holds_run():
                raise used(run_dir)
        except DlrunError as exc:
            raise Refused(exc) from None
        except OSError as exc:
            resuming = config.get("resume") is not None
            raise Refused(unwritable(exc, resuming, run_dir)) from None


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
