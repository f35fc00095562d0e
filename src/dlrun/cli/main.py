"""The `dlrun` command: Hydra composes the config; dlrun reports every user mistake in one line.

Only Hydra, OmegaConf and the schema are imported here: `dlrun --help`, `dlrun --cfg job` and
config errors are answered without importing torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from dlrun import compat
from dlrun.cli import callbacks, hydra_job, task_args

# the arguments' checks and rewriting and the one-line messages, defined beside this module;
# dlrun.cli.main still names them (dlrun.cli.args.one_line, dlrun.cli.args.resume_argv, ...)
from dlrun.cli.args import (
    HELP_FLAGS,
    _composing,
    check_arguments,
    hydra_quoted,
    one_line,
    resume_argv,
)
from dlrun.cli.invocation import Invocation, current, started
from dlrun.config import schema
from dlrun.engine import distributed
from dlrun.errors import DlrunError, Interrupted, UserCodeError
from dlrun.rundir import atomic as files
from dlrun.rundir import layout as rundir
from dlrun.rundir import lock as dirlock
from dlrun.rundir.layout import RunDir
from dlrun.runs import interrupt
from dlrun.runs import stop_reasons as failures
from dlrun.runs.info import RunInfo
from dlrun.sweeps import manifest as multirun
from dlrun.terminal import ends_quietly_on_closed_pipe
from dlrun.tracking import registry as loggers


@dataclass(frozen=True)
class Ran:
    """What one `dlrun` command ran in this process: its jobs' run directories, and its sweep's
    directory (a sweep's jobs may have run in other processes: its manifest lists them all)."""

    run_dirs: list[Path]
    sweep_dir: Path | None


@hydra.main(version_base=None, config_path="pkg://dlrun.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """Hydra's task function. Errors are kept, not raised, so that Hydra neither prints its own
    report nor stops a sweep at the first failed job; main() reports them afterwards."""
    info = hydra_job.run_info()
    invocation = current()
    run_dir, in_sweep, overrides = info.run_dir, info.in_sweep, info.overrides
    lock = dirlock.held(run_dir)
    try:
        in_main = invocation.in_main
        # a signal that came before Hydra made the sweep directory left no stop file
        stop = invocation.sweep_stop
        early = stop.signum if in_main and stop is not None else None
        if in_sweep and multirun.stop_requested(run_dir, info.sweep_dir, bool(early)):
            if in_main:  # the basic launcher: stop its loop here
                flag = info.sweep_dir / rundir.STOP
                raise Interrupted(early or interrupt.read_flag(flag) or signal.SIGINT)
            return None  # a worker process: the parent reports the interruption
        if in_sweep and distributed.is_main():  # the same sweep started twice: one runs a job
            lock = dirlock.acquire(
                run_dir, wait=lambda holder: _waiting(info, holder), command=invocation.command
            )
        action = multirun.prepare_job(run_dir, overrides) if in_sweep else "run"
        if action == "skip":
            print(f"job {info.job_num}: completed earlier, skipped ({' '.join(overrides)})")
            return multirun.objective(run_dir)
        config = schema.to_objects(cfg)  # refuse bad values before importing torch
        # an unwritable directory or a full disk fails here, not later
        files.probe(run_dir, callbacks.elsewhere(bool(config.resume) or action == "resume"))
        # an unusable destination: one line, before any work; what a logger starts now (MLflow's
        # worker opens its store) works while the run imports torch and sets up
        info = dataclasses.replace(
            info, early=loggers.prepare(config.logger, distributed.is_main())
        )
        if action == "resume":
            config = dataclasses.replace(config, resume=str(run_dir))
        if lock is not None:  # under the lock no live writer owns a temp file here
            RunDir(run_dir).remove_stale_temps()
        from dlrun.runs.stages import execute  # imports torch: only once there is work to do

        try:
            objective = execute(config, schema.plain(cfg), info)
        finally:  # a run that failed before its loop leaves what they started unused
            loggers.release(info.early)
        invocation.ran.append(run_dir)
        return objective
    except KeyboardInterrupt as exc:
        if in_sweep and not invocation.in_main:
            interrupt.hand_on(getattr(exc, "signum", None))  # SIGUSR2: submitit requeues
            if multirun.slurm_requeues(exc):
                # requeued by SLURM: the job has saved last.pt and recorded `interrupted`;
                # leaving without a result lets the requeued attempt, which resumes here, give
                # the submitter its result
                raise SystemExit(128 + signal.SIGTERM) from None
            # a launcher's worker process: the job has recorded `interrupted`; raising would
            # reach the launcher as a broken worker, not a result
            return None
        raise
    except BrokenPipeError:  # the output's reader went away: no job failed
        raise
    except Exception as exc:
        if not isinstance(exc, DlrunError):  # its traceback in the run log, whatever it is
            failures.log_traceback(exc)
            exc = failures.blamed(exc) or exc  # the user's own task code: their file and line
        if in_sweep:
            multirun.record_failure(run_dir, overrides, exc)
            print(f"job {info.job_num} failed: {one_line(exc)}", file=sys.stderr)
        invocation.failures.append(exc)
        return None
    finally:
        if in_sweep:
            if lock is not None:  # a worker process runs other jobs next
                lock.release()
            multirun.update_manifest(info.sweep_dir)
        elif (run_dir.parent / rundir.MANIFEST).is_file():  # a sweep's job resumed on its own
            multirun.update_manifest(run_dir.parent)


def _waiting(info: RunInfo, holder: dict) -> None:
    print(
        f"job {info.job_num}: {dirlock.describe(holder)} is running it; waiting for it to end",
        flush=True,
    )


def invoke(argv: list[str]) -> Ran:
    """The `dlrun` command, run in this process: returns what it ran, and raises a DlrunError
    carrying the one line the command prints for a user mistake (``exit_code`` set). Hydra's
    global state and sys.argv are left as they were, so the Python API can call it many times
    in one process."""
    with started(shlex.join(["dlrun", *argv])) as invocation:
        return _invoke(argv, invocation)


def _invoke(argv: list[str], invocation: Invocation) -> Ran:
    typed = argv  # as given: what the commands dlrun prints repeat
    # dlrun's hydra/launcher=ray preset has the name of the Ray plugin's schema, so Hydra checks
    # it against that schema (as it should) and warns of a deprecation meant for the plugin's own
    # users (here, not at import: a caller's warning filters may have been reset since)
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against")
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    saved_argv = sys.argv
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's report
    try:
        check_arguments([a for a in argv if a != rundir.TRUST_TASK_FILE])
        argv = hydra_quoted(argv)
        # the tasks are registered here, so that a broken one is a one-line error like any other
        # (a run directory's recorded task_file only when named, or with --trust-task-file)
        overrides = [a for a in resume_argv(argv) if a != rundir.TRUST_TASK_FILE]
        argv = [a for a in argv if a != rundir.TRUST_TASK_FILE]
        overrides = task_args.prepare(overrides)
        sys.argv = [saved_argv[0], *overrides, *distributed.hydra_overrides(argv)]
        is_multirun = bool({"-m", "--multirun"} & set(argv))
        stop = interrupt.SweepStop(lambda: invocation.sweep_dir, rundir.STOP)
        invocation.sweep_stop = stop
        try:
            with logging_restored():
                if HELP_FLAGS & set(argv):
                    with compat.one_config_repository():
                        _hydra_main()
                else:
                    # a single run: SIGTERM, like Ctrl-C, ends it `interrupted` wherever it is
                    with stop if is_multirun else interrupt.terminate_interrupts():
                        _hydra_main()
            if stop.signum is not None:  # every job has ended: now the sweep stops
                raise Interrupted(stop.signum)
        except callbacks.Refused as refused:
            raise refused.error from None
        except BrokenPipeError:  # our output's reader went away: not the run directory's fault
            raise
        except (TypeError, ValueError) as exc:
            cause = exc.__cause__ or exc.__context__
            if not isinstance(cause, OSError) and _composing(exc):
                # e.g. logger=0 or logger=[0]: not a group's option, found by Hydra's own code
                raise DlrunError(f"{one_line(exc)}; see dlrun --help") from exc
            if not isinstance(cause, OSError) or isinstance(exc, TypeError):
                raise
            # logging could not open dlrun.log in the run directory (below, as an OSError)
            raise _unwritable(cause, argv, invocation) from exc
        except OSError as exc:
            # Hydra making the run directory or writing its .hydra/ record
            if isinstance(exc, HydraException):
                raise  # a missing config is an IOError too
            raise _unwritable(exc, argv, invocation) from exc
        sweep_dir = invocation.sweep_dir
        if sweep_dir is not None:  # a sweep: jobs may have run in other processes
            print(multirun.finish(sweep_dir))  # raises when a recorded job failed
        if invocation.failures:  # e.g. a job refused to overwrite another sweep's job directory
            raise invocation.failures[0]
        return Ran(list(invocation.ran), sweep_dir)
    except (DlrunError, HydraException, OmegaConfBaseException) as exc:
        sweep_dir, before = invocation.sweep_dir, invocation.before
        made = invocation.made_sweep_dir or not isinstance(exc, DlrunError)
        if sweep_dir is not None and made:  # never a sweep directory found there
            multirun.discard_if_empty(sweep_dir)
        refused = not isinstance(exc, UserCodeError)  # a failed run keeps its log
        if before is not None and sweep_dir is None and refused:
            before.remove_created()
        if full_error:
            raise
        explained = DlrunError(multirun.missing_plugin(str(exc)) or one_line(exc))
        explained.exit_code = getattr(exc, "exit_code", 2)
        raise explained from exc
    except KeyboardInterrupt:
        sweep_dir, before = invocation.sweep_dir, invocation.before
        if sweep_dir is None and before is not None:  # a single run
            if not (before.run_dir / rundir.SUMMARY).exists():  # stopped before its record
                before.remove_created()
        if sweep_dir is not None:
            multirun.end_interrupted(sweep_dir)
            manifest = multirun.update_manifest(sweep_dir)
            loggers.end_sweep(sweep_dir, manifest, "interrupted")
            print(
                "sweep interrupted; finished jobs are kept and skipped when you continue it with: "
                + multirun.continue_command(typed, sweep_dir),
                file=sys.stderr,
            )
        raise
    finally:
        dirlock.release_all()  # (the kernel would at exit; main() may run again in-process)
        sys.argv = saved_argv
        if not full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        GlobalHydra.instance().clear()


@ends_quietly_on_closed_pipe
def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit 0, or 2 for a user mistake (one line on stderr)."""
    argv = sys.argv[1:] if argv is None else argv
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        invoke(argv)
    except DlrunError as exc:
        if full_error:
            raise
        if distributed.is_main():  # under torchrun every rank refuses alike: rank 0 says it
            print(f"dlrun: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        if full_error:
            raise
        sys.exit(128 + getattr(exc, "signum", signal.SIGINT))
    except BrokenPipeError:  # ended quietly by ends_quietly_on_closed_pipe
        raise
    except Exception as exc:
        if full_error:
            raise
        log = getattr(exc, "dlrun_log", None)  # only a log that holds the traceback is named
        where = f"the traceback is in {log}; " if log else ""
        print(
            f"dlrun: internal error: {type(exc).__name__}: {one_line(exc)} "
            f"({where}HYDRA_FULL_ERROR=1 prints it)",
            file=sys.stderr,
        )
        sys.exit(1)


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """The root logger's handlers and level as they were before Hydra set up the run's (its
    dlrun.log handler is closed): nothing logged later in this process lands in that run's log."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:  # on a full disk its last flush fails: the error
                with contextlib.suppress(OSError):  # that stopped the run is the one to show
                    handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def _unwritable(cause: OSError, argv: list[str], invocation: Invocation) -> DlrunError:
    # the disk that failed: the file's, else the run's (or sweep's) directory, not the cwd
    before = invocation.before
    target = before.run_dir if before is not None else invocation.sweep_dir
    where = Path(cause.filename).parent if cause.filename else (target or Path.cwd())
    resuming = any(a.startswith("resume=") for a in argv)
    return DlrunError(
        f"cannot write the run directory: {files.describe(cause)}; "
        f"{files.remedy(cause, where)}, or {callbacks.elsewhere(resuming)}"
    )


if __name__ == "__main__":
    main()
