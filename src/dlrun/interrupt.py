"""Ctrl-C and SIGTERM (a cluster's pre-emption) stop a run at the next epoch boundary.

The first signal asks the loop to finish the epoch in progress, write last.pt and stop; a second
one aborts at once. The run then exits 130 (SIGINT) or 143 (SIGTERM) with a resumable checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """A context in which SIGINT/SIGTERM only set ``requested`` (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        """Stop at the next epoch boundary as on a signal (SIGPIPE: the output pipe closed)."""
        if self.signum is None:
            self.signum = signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # asked twice: stop now
            raise Interrupted(signum)
        self.signum = signum
        name = signal.Signals(signum).name
        os.write(2, f"\n{name}: stopping after this epoch (again to abort now)\n".encode())

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
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
