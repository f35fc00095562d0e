"""The MLflow worker started before the run sets up, so the store is ready sooner.

mlflow's import (about 2 s of CPU) and the opening of the store (about 1 s; a new SQLite store's
tables and migrations, 3 to 6 s) used to start only when the training loop did, after torch's
import and the run's set-up: a short run then waited for all of it at its end. The command starts
the worker (dlrun.tracking_worker) as soon as the config is checked, and it opens the store while
the run imports torch and builds its task; the run's :class:`dlrun.tracking.MlflowRun` takes it
over. One unused (the run failed before its loop, a resume elsewhere) just exits when its stdin
closes: it made or opened the store and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass

from dlrun.schema import MLflowConfig
from dlrun.tracking_worker import sqlite_path


@dataclass
class Early:
    """A worker started for ``uri``; ``new_store``: its SQLite database did not exist yet."""

    uri: str
    proc: subprocess.Popen
    new_store: bool


_waiting: list[Early] = []  # at most one: the job this process runs now


def prepare(settings: MLflowConfig, main: bool) -> None:
    """Refuse an unusable store in one line; else start its worker (``main``: the process that
    logs, rank 0 under torchrun)."""
    from dlrun import tracking

    uri = tracking.tracking_uri(settings)
    tracking.check_store(uri)
    if main:
        start(uri)


def start(uri: str) -> None:
    """Start a worker that opens (or creates) the store ``uri`` now and waits for its run."""
    drop()
    db = sqlite_path(uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun.tracking_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # until the run names its directory: then its dlrun.log
        start_new_session=True,  # Ctrl-C reaches dlrun, which ends the run KILLED
    )
    assert proc.stdin is not None
    proc.stdin.write((json.dumps({"open": uri}) + "\n").encode())
    proc.stdin.flush()
    _waiting.append(Early(uri, proc, db is not None and not db.exists()))


def take(uri: str) -> Early | None:
    """The worker started early for ``uri`` (None when there is none for that store)."""
    early = _waiting.pop() if _waiting else None
    if early is not None and early.uri != uri:
        _close(early)
        return None
    return early


def drop() -> None:
    """Let an unused worker go (a sweep's next job in the same process starts its own)."""
    while _waiting:
        _close(_waiting.pop())


def _close(early: Early) -> None:
    with contextlib.suppress(OSError):
        assert early.proc.stdin is not None
        early.proc.stdin.close()
