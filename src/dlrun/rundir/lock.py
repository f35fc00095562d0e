"""One writer per run directory: an OS file lock on a file inside it.

A run, a resume and a sweep job hold ``flock(LOCK_EX)`` on the run directory's lock file for as
long as they may write there. The kernel drops the lock when the process dies, however it dies
(SIGKILL, a power cut), so a lock is never left stale: a run whose summary says ``running`` while
its lock is free is a run whose process is gone. The lock file also records who holds it (pid,
host, command), so a second writer can be told whom it waits for. Readers (dlrun-report, a
rerun's source) never take the lock; :func:`holder` only tests it, without blocking.

Torch-free: the CLI takes the lock before Hydra writes anything into the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlrun.errors import DlrunError

NAME = ".dlrun.lock"  # in the run directory: who writes here now

# a reader tests the lock with a shared lock for a few microseconds: a writer retries that long
_TRIES, _PAUSE = 20, 0.01


class Busy(DlrunError):
    """Another process writes this run directory."""


class Lock:
    """This process's hold on one run directory (kept until :meth:`release` or exit)."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory, self.fd = directory, fd
        self.file = directory / NAME
        info = os.fstat(fd)
        self.identity = (info.st_dev, info.st_ino)
        self.token: str | None = None  # written into the record once the lock is taken

    def intact(self) -> bool:
        """The directory is still where it was: its lock file is provably the one this process
        made (same device and inode, still linked, still holding this process's token). False
        once the directory was removed or moved away, even if another was made in its place:
        then nothing there is this process's to write or remove."""
        try:
            info = os.stat(self.file)
            if (info.st_dev, info.st_ino) != self.identity or os.fstat(self.fd).st_nlink < 1:
                return False
        except OSError:
            return False
        return self.token is None or _read(self.fd).get("token") == self.token

    def release(self) -> None:
        _held.pop(_key(self.directory), None)
        with contextlib.suppress(OSError):
            os.close(self.fd)


_held: dict[str, Lock] = {}


def _key(directory: Path) -> str:
    return os.path.abspath(directory)


def held(directory: Path) -> Lock | None:
    """This process's lock on ``directory``, if it holds one."""
    return _held.get(_key(directory))


def owns(directory: Path) -> bool:
    """This process holds ``directory``'s lock and its lock file is still provably that one:
    only then may it remove what it made there."""
    lock = held(directory)
    return lock is not None and lock.intact()


def acquire(
    directory: Path,
    wait: Callable[[dict[str, Any]], None] | None = None,
    command: str | None = None,
) -> Lock:
    """Lock ``directory`` (made if missing) for this process, or raise :class:`Busy` naming the
    holder. With ``wait``, call it with the holder's record and block until the lock is free.
    ``command``: what the holder's record says it runs (default: this process's argv)."""
    lock = held(directory)
    if lock is not None:
        return lock
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if not _try_lock(fd):
                record = _read(fd)
                if wait is None:
                    raise Busy(
                        f"{directory} is being written by {describe(record)}; wait for it to "
                        "end (or stop it), then try again"
                    )
                wait(record)
                fcntl.flock(fd, fcntl.LOCK_EX)
            lock = Lock(directory, fd)
            if lock.intact():  # not a lock file unlinked by a refused run meanwhile
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or " ".join(sys.argv),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "token": secrets.token_hex(16),
    }
    _held[_key(directory)] = lock  # held before its record is written: on a full disk the
    os.ftruncate(fd, 0)  # write fails, and the refusal still removes what this process made
    os.pwrite(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode(), 0)
    lock.token = record["token"]
    return lock


def _try_lock(fd: int) -> bool:
    for attempt in range(_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < _TRIES:
                time.sleep(_PAUSE)
    return False


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def holder(directory: Path) -> dict[str, Any] | None:
    """The record of the process writing ``directory`` now ({} when unreadable), or None when
    no process holds its lock. Never blocks."""
    try:
        fd = os.open(directory / NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no writer since this dlrun (or an unreadable directory)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(record: dict[str, Any]) -> str:
    """``pid 123 on host (dlrun resume=..., since ...)`` from a holder's record."""
    if not record:
        return "another process"
    text = f"pid {record.get('pid', '?')} on {record.get('host', '?')}"
    details = [str(record[k]) for k in ("command", "since") if record.get(k)]
    return f"{text} ({', since '.join(details)})" if details else text


def release_all() -> None:
    for lock in list(_held.values()):
        lock.release()
