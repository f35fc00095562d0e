"""How a run that stopped in training says why, in one line that says what to do next.

The loop raises what it finds (a NaN loss, torch's out-of-memory error); these turn them into the
:mod:`dlrun.errors` a user reads. Kept apart from errors.py, which the CLI imports without torch.
"""

from __future__ import annotations

from dlrun import rundir
from dlrun.errors import Diverged, DlrunError, NonFiniteLoss


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
