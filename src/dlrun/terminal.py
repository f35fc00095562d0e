"""What goes to the terminal, torch-free: a closed output pipe (`dlrun --help | head`) ends a
command quietly, as other tools end, and :class:`Terminal` is rich's console made to let it.

Python ignores SIGPIPE, so a write to a pipe whose reader has gone raises BrokenPipeError; left
alone it surfaces as an error about whatever was being done, or as a traceback in the
interpreter's last flush. Python's documented recipe: point stdout at /dev/null, so that no
later write or flush can fail again, and exit.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from rich.console import Console as RichConsole

CLOSED_PIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a tool that SIGPIPE ended

F = TypeVar("F", bound=Callable[..., None])


def detach_stdout() -> None:
    """Send the rest of this process's standard output to /dev/null."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class StdoutHandler(logging.StreamHandler):
    """Hydra's console log (a sweep's "Launching jobs" lines): a closed pipe ends the command
    instead of printing a logging traceback on stderr for every line that follows."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        error = sys.exc_info()[1]
        if isinstance(error, BrokenPipeError):
            raise error
        super().handleError(record)


def ends_quietly_on_closed_pipe(main: F) -> F:
    """A console script's entry point that exits CLOSED_PIPE_EXIT, silently, when its output
    pipe closes (the final flush is done here, where it can still be caught)."""

    @functools.wraps(main)
    def entry(*args: object, **kwargs: object) -> None:
        try:
            try:
                main(*args, **kwargs)
            finally:
                sys.stdout.flush()
        except BrokenPipeError:
            detach_stdout()
            sys.exit(CLOSED_PIPE_EXIT)

    return entry  # type: ignore[return-value]


class Terminal(RichConsole):
    """rich's console, except that a closed output pipe raises BrokenPipeError for the caller to
    handle (rich's own default exits 1 on the spot, in the middle of whatever was going on)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the output pipe closed")
