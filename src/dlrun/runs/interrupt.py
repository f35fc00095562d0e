"""Ctrl-C and SIGTERM (a cluster's pre-emption) stop a run at the next epoch boundary.

The first signal asks the loop to finish the epoch in progress, write last.pt and stop; a second
one, a second or more later, aborts at once. The run then exits 130 (SIGINT) or 143 (SIGTERM)
with a resumable checkpoint.

A sweep's jobs may run in worker processes that the signal never reaches (it was sent to the
parent alone, or the launcher starts its jobs in their own session). The parent
(:class:`SweepStop`) then writes a stop file in the sweep directory, which each job's
:class:`StopRequest` reads at its epoch boundaries: a file, not a forwarded signal, so a worker
that got the signal itself too does not take the two for "again, abort now".
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType

from dlrun.errors import Interrupted


class StopRequest:
    """A context in which SIGINT/SIGTERM only set ``requested`` (main thread only).

    ``flag``: a sweep's stop file; once it exists the stop is requested as if by the signal
    named in it (read by :attr:`signum`, once per epoch: one stat, in sweeps only).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    NOTICE = "stopping after this epoch"
    REPEAT_S = 1.0  # a second signal this long after the first aborts at once

    def __init__(self, flag: Path | None = None) -> None:
        self._signum: int | None = None  # the stop asked for: by a signal, the stop file or a pipe
        # when a signal first reached this process: only a second *signal*, REPEAT_S or more
        # later, aborts. A sweep's worker may read the stop file before its own copy of the
        # terminal's signal runs its handler (the handler waits for the C call in progress), and
        # submitit's local controller forwards the SIGTERM it got too: copies of one signal,
        # arriving together, are not "again".
        self._first: float | None = None
        self.flag = flag
        self._previous: dict[int, object] = {}

    @property
    def signum(self) -> int | None:
        if self._signum is None and self.flag is not None:
            self._signum = read_flag(self.flag)
        return self._signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        """Stop at the next epoch boundary as on a signal (SIGPIPE: the output pipe closed)."""
        if self.signum is None:
            self._signum = signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._first is not None:
            if now - self._first >= self.REPEAT_S:  # asked again: stop now
                raise Interrupted(signum)
            return  # a copy of the first
        self._first = now
        if self._signum is None:
            self._signum = signum
        name = signal.Signals(signum).name
        os.write(2, f"\n{name}: {self.NOTICE} (again to abort now)\n".encode())

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (*self.SIGNALS, *requeue_signals()):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def requeue_signals() -> tuple[int, ...]:
    """SIGUSR2 in a SLURM job whose launcher handles it (submitit: a time limit or pre-emption
    is near; its handler requeues the job and exits). The run first finishes its epoch and
    saves last.pt; then :func:`hand_on` gives the signal to that handler."""
    usr2 = getattr(signal, "SIGUSR2", None)
    if usr2 is None or not os.environ.get("SLURM_JOB_ID"):
        return ()
    return (usr2,) if callable(signal.getsignal(usr2)) else ()


def hand_on(signum: int | None) -> None:
    """After the run stopped on a requeue signal: its launcher's handler (requeue, exit)."""
    if signum is not None and signum in requeue_signals():
        signal.getsignal(signum)(signum, None)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def terminate_interrupts(enabled: bool = True) -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` as SIGINT raises KeyboardInterrupt, so a run stopped
    outside the loop (loading its data, say) still ends ``interrupted``, not killed mid-way."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_flag(flag: Path) -> int | None:
    """The signal a stop file asks for; None while there is none."""
    try:
        text = flag.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else signal.SIGINT


class SweepStop(StopRequest):
    """The sweep's parent process: a signal writes the stop file (``flag_dir()`` / ``name``, the
    sweep directory once Hydra has made it) and the parent goes on waiting for its jobs, which
    end at their next epoch boundary; a second signal aborts at once."""

    NOTICE = "the sweep's running jobs stop after their epoch in progress"

    def __init__(self, flag_dir: Callable[[], Path | None], name: str) -> None:
        super().__init__()
        self._flag_dir, self._name = flag_dir, name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self._first is None
        super()._handle(signum, frame)
        where = self._flag_dir()
        if first and where is not None:
            try:
                (where / self._name).write_text(f"{signum}\n")
            except OSError:  # the jobs that got the signal themselves still stop
                pass
