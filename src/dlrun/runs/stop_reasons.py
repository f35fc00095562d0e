"""How a run that stopped in training says why, in one line that says what to do next.

The loop raises what it finds (a NaN loss, torch's out-of-memory error); these turn them into the
:mod:`dlrun.errors` a user reads. Kept apart from errors.py, which the CLI imports without torch.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dlrun import tasks
from dlrun.errors import Diverged, DlrunError, NonFiniteLoss, UserCodeError
from dlrun.rundir import atomic as files
from dlrun.rundir import layout as rundir

if TYPE_CHECKING:
    from dlrun.config.trainer import TrainerConfig


def explain(
    exc: Exception,
    epoch: int,
    trainer: TrainerConfig,
    lr: float,
    last_finite: Callable[[], int | None],
) -> DlrunError | None:
    """A NaN/inf stop or running out of memory, as one line that says what to do; None for
    any other error. ``last_finite`` writes the last finite epoch and returns the one last.pt
    holds (it runs only for a NaN/inf stop)."""
    if isinstance(exc, RuntimeError):
        oom = out_of_memory(exc, epoch, trainer.batch_size)
        if oom is not None:
            return oom
    what = divergence(exc, trainer.detect_anomaly, epoch)
    if what is None:
        return None
    if isinstance(exc, NonFiniteLoss) and before_any_update(exc, trainer.accumulate):
        return from_the_data(what, last_finite())
    return diverged(what, last_finite(), lr)


def before_any_update(exc: NonFiniteLoss, accumulate: int) -> bool:
    """The loss itself went NaN/inf in a step of epoch 1 that no update preceded (with
    ``trainer.accumulate`` N, the first update follows step N): no learning rate had acted yet."""
    loss = exc.loss
    return exc.epoch == 1 and exc.step <= max(1, accumulate) and not (loss - loss == 0)


def from_the_data(what: str, saved_epoch: int | None) -> Diverged:
    """A NaN/inf loss before any update: the data, or the model's output on them, are the
    cause (values too large for float32, a NaN in them), not the learning rate."""
    held = (
        ""
        if saved_epoch is None
        else f"; {rundir.CHECKPOINTS}/{rundir.LAST} holds epoch {saved_epoch}"
    )
    return Diverged(
        f"{what}, before any update: the data (or the model's initial output on them) are NaN, "
        "infinite or too large for float32, so the learning rate is not the cause; check the "
        f"task's data settings (task.*, data.*){held}"
    )


def divergence(exc: BaseException, anomaly_mode: bool, epoch: int) -> str | None:
    """What diverged, when ``exc`` is a NaN/inf stop (the loop's, or autograd's anomaly mode
    naming the op that made a NaN); None for any other error."""
    if isinstance(exc, NonFiniteLoss):
        return str(exc)
    if anomaly_mode and isinstance(exc, RuntimeError) and "nan" in str(exc).lower():
        first = str(exc).strip().splitlines()[0].rstrip(".")
        return f"autograd's anomaly mode stopped epoch {epoch + 1}: {first}"
    return None


def diverged(what: str, saved_epoch: int | None, lr: float) -> Diverged:
    """The NaN/inf stop, with what last.pt holds and a learning rate to try."""
    held = (
        f"{rundir.CHECKPOINTS}/{rundir.LAST} holds epoch {saved_epoch}, the last finite state"
        if saved_epoch is not None
        else "no checkpoint was written"
    )
    return Diverged(
        f"{what}; {held}; lower the learning rate: optimizer.lr={lr:g} now, try "
        f"optimizer.lr={lr / 10:g}"
    )


def out_of_memory(exc: BaseException, epoch: int, batch_size: int) -> DlrunError | None:
    """torch's CUDA out-of-memory error, with a batch size to try; None for any other error."""
    import torch

    if not isinstance(exc, torch.cuda.OutOfMemoryError):
        return None
    return DlrunError(
        f"out of GPU memory at epoch {epoch + 1} with trainer.batch_size={batch_size} "
        f"({str(exc).strip().splitlines()[0][:120]}); try trainer.batch_size="
        f"{max(1, batch_size // 2)}, a smaller model, or device=cpu"
    )


def interrupted(epoch: int, saved_epoch: int | None, resume_command: str | None) -> str:
    """What an interrupted run has on disk, and (outside a sweep, which says it) how to go on."""
    if saved_epoch is None:
        return f"interrupted at epoch {epoch}, before any checkpoint"
    if resume_command is None:
        return f"interrupted: checkpoint of epoch {saved_epoch} written"
    return (
        f"interrupted: checkpoint of epoch {saved_epoch} written; continue with: {resume_command}"
    )


def write_failed(
    exc: OSError, what: str, saved_epoch: int | None, run_dir: Path, command: str = "dlrun"
) -> DlrunError:
    """A file operation that failed (full disk, read-only file system, no permission) as one
    line: ``what`` stopped, why, what to fix, what last.pt still holds and how to go on. A write
    that failed because the run directory itself was removed or moved says that instead."""
    try:
        rundir.RunDir(run_dir).check_present()
    except rundir.RunDirGone as gone:
        return gone
    if saved_epoch is None:
        then = "no checkpoint was written; then run again"
    else:
        then = (
            f"{rundir.CHECKPOINTS}/{rundir.LAST} still holds epoch {saved_epoch}; then continue "
            f"with: {command} resume={shlex.quote(str(run_dir))}"
        )
    return DlrunError(f"{what} ({files.describe(exc)}); {files.remedy(exc, run_dir)}; {then}")


def log_traceback(exc: BaseException, what: str = "run failed") -> Path | None:
    """Write ``exc``'s traceback to the run log once; returns the log file that now holds it
    (None when no file does, e.g. before Hydra set up the run's logging), kept on ``exc`` too, so
    that a message points at a log only when that log holds the traceback."""
    if hasattr(exc, "dlrun_log"):
        return exc.dlrun_log
    log = logging.getLogger("dlrun")
    log.error(what, exc_info=exc)
    path = log_file(log)
    try:
        exc.dlrun_log = path  # type: ignore[attr-defined]
    except AttributeError:  # an exception type with __slots__
        pass
    return path


def log_file(log: logging.Logger) -> Path | None:
    """The file a logger's records go to (Hydra's run log, dlrun.log), flushed; None if none."""
    current: logging.Logger | None = log
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.flush()
                path = Path(handler.baseFilename)
                return path if path.is_file() and path.stat().st_size else None
        current = current.parent if current.propagate else None
    return None


def user_code(exc: BaseException) -> str | None:
    """``FILE:LINE in FUNCTION`` of the innermost frame of ``exc``'s traceback that is in a
    user's own task: beside a task file (its helpers too), or in an installed task's package
    (not the libraries of a virtual environment kept in the same directory); None when no
    frame is."""
    roots = []
    for one in tasks.found().values() if tasks.is_scanned() else ():
        file = getattr(one.module, "__file__", None)
        if one.tutorial or not file:
            continue
        roots.append(Path(file).resolve().parent)  # its package, or the task file's directory
    if not roots:
        return None
    ours = Path(__file__).resolve().parent  # dlrun's own code, wherever it is installed
    where = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        path = Path(code.co_filename).resolve()
        if ours not in path.parents and any(
            root in path.parents and not _INSTALLED & set(path.relative_to(root).parts)
            for root in roots
        ):
            where = f"{path}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return where


_INSTALLED = {"site-packages", "dist-packages"}  # torch and the rest, in a venv inside a project


def said(exc: BaseException) -> str:
    """``Type: first line of its message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def blamed(exc: BaseException) -> UserCodeError | None:
    """An exception raised in the user's own task code, as the one line that names their file
    and line, the exception and the log that holds the traceback (logged here if not yet)."""
    where = user_code(exc)
    if where is None:
        return None
    log = log_traceback(exc)
    then = f"the traceback is in {log}" if log else "HYDRA_FULL_ERROR=1 prints the traceback"
    error = UserCodeError(f"{where}: {said(exc)} (in your task's code; {then})")
    error.dlrun_log = log  # type: ignore[attr-defined]
    return error
