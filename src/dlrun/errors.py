"""Errors that dlrun explains to the user in one line instead of a traceback."""

from __future__ import annotations

import signal


class DlrunError(Exception):
    """A problem the user can fix (bad config, missing data, unusable checkpoint)."""

    exit_code = 2


class ConfigError(DlrunError):
    """A config value that composes but cannot be used."""


def check(ok: bool, key: str, expected: str, value: object) -> None:
    """Refuse a config value in the words every schema uses (dlrun.tasks.check, for tasks)."""
    if not ok:
        raise ConfigError(f"{key}={value} is not allowed: expected {expected}")


class Diverged(DlrunError):
    """Training diverged (a NaN or infinite loss): exit code 3, not a config mistake."""

    exit_code = 3


class NonFiniteLoss(Diverged):
    """The loop's finding: which epoch and step went NaN or infinite."""

    def __init__(self, epoch: int, step: int, steps: int, loss: float) -> None:
        what = (
            f"the training loss is {loss}"
            if loss != loss or abs(loss) == float("inf")
            else "the weights became NaN or infinite"
        )
        super().__init__(f"{what} at epoch {epoch}, step {step} of {steps}")
        self.epoch, self.step, self.steps, self.loss = epoch, step, steps, loss


class UserCodeError(DlrunError):
    """An exception raised in the user's own task code: the run is `failed` (exit code 1), and
    the line names their file and line, not dlrun, and the log that holds the traceback."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM (``signum``) stopped a run or a sweep (dlrun.runs.interrupt)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def defined_at(obj: object) -> str:
    """``FILE:LINE`` where a class or function of the user's task is written (its name when
    the source cannot be found)."""
    import inspect

    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
    except (OSError, TypeError):
        return getattr(obj, "__qualname__", repr(obj))
