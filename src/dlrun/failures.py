"""How a run that stopped in training says why, in one line that says what to do next.

The loop raises what it finds (a NaN loss, torch's out-of-memory error); these turn them into the
:mod:`dlrun.errors` a user reads. Kept apart from errors.py, which the CLI imports without torch.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dlrun import files, rundir
from dlrun.errors import Diverged, DlrunError, NonFiniteLoss

if TYPE_CHECKING:
    from dlrun.schema import TrainerConfig


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
