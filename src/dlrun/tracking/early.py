"""The MLflow worker started before the run sets up, so the store is ready sooner.

mlflow's import (about 2 s of CPU) and the opening of the store (about 1 s; a new SQLite store's
tables and migrations, 3 to 6 s) used to start only when the training loop did, after torch's
import and the run's set-up: a short run then waited for all of it at its end. The command starts
the worker (dlrun.tracking.worker) as soon as the config is checked, and it opens the store while
the run imports torch and builds its task. The command holds it in the run's RunInfo, and the
run's MlflowRun (dlrun.tracking.mlflow_run) takes it over. One unused (the run failed before its
loop, a resume elsewhere) just exits when its stdin closes: it made or opened the store.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass

from dlrun.tracking.store_check import check_store
from dlrun.tracking.worker import sqlite_path


@dataclass
class Early:
    """A worker started for ``uri``; ``new_store``: its SQLite database did not exist yet. The
    command holds it (in the run's RunInfo) until the run takes it over or ends without it."""

    uri: str
    proc: subprocess.Popen
    new_store: bool
    taken: bool = False  # the run took it over
    released: bool = False  # let go unused

    def take(self, uri: str) -> Early | None:
        """This worker, now the run's, if it is for the store ``uri`` (else let go: None)."""
        if self.taken or self.released or self.uri != uri:
            self.release()
            return None
        self.taken = True
        return self

    def release(self) -> None:
        """Let the worker go unless a run took it: with its stdin closed it just exits."""
        if self.taken or self.released:
            return
        self.released = True
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()


def prepare(uri: str, main: bool) -> Early | None:
    """Refuse an unusable store ``uri`` in one line; else start its worker (``main``: the
    process that logs, rank 0 under torchrun)."""
    check_store(uri)
    return start(uri) if main else None


def start(uri: str) -> Early:
    """Start a worker that opens (or creates) the store ``uri`` now and waits for its run."""
    db = sqlite_path(uri)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlrun.tracking.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # until the run names its directory: then its dlrun.log
        start_new_session=True,  # Ctrl-C reaches dlrun, which ends the run KILLED
    )
    assert proc.stdin is not None
    proc.stdin.write((json.dumps({"open": uri}) + "\n").encode())
    proc.stdin.flush()
    return Early(uri, proc, db is not None and not db.exists())
