"""Atomic file replacement: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dlrun.errors import DlrunError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replace(path: Path, mode: str = "w", durable: bool = False) -> Iterator[IO]:
    """Write to a temp file beside ``path``, then rename it over ``path``.

    ``durable`` also fsyncs the file and the directory, so the new content survives a power cut
    (checkpoints); a crash before the rename leaves the old file untouched either way.
    """
    # the directory must exist: a run directory removed meanwhile is never remade in part
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def describe(exc: OSError) -> str:
    """``[Errno 28] No space left on device: 'x'`` -> ``x: No space left on device``."""
    name = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    return f"{name}: {reason}" if name else reason


def remedy(exc: OSError, where: Path | str) -> str:
    """What to do about a failed write, by its cause: a read-only file system or a permission
    is not fixed by freeing space (and saying so would send a user deleting good files)."""
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only file system (remount it read-write)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: give this user write access to {where}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free some space on the disk of {where}"
    return f"make {where} writable"


def overwrite(path: Path, text: str) -> None:
    """Rewrite a small file in place: the fallback when :func:`replace` has no room for its temp
    file (a full disk), so a record can still say how the run ended. Not atomic."""
    with open(path, "r+" if path.exists() else "w") as f:
        f.truncate(0)
        f.write(text)


PROBE_BYTES = 1 << 20


def probe(directory: Path, elsewhere: str) -> None:
    """Write, fsync and delete a 1 MiB file in ``directory``: an unwritable directory or a full
    disk is reported before any training, not at the first checkpoint. ``elsewhere``: the
    other way out the message offers."""
    path = directory / ".dlrun-write-test"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise DlrunError(
            f"cannot write the run directory {directory}: {describe(exc)}; "
            f"{remedy(exc, directory)}, or {elsewhere}"
        ) from None
    finally:
        path.unlink(missing_ok=True)


def missing_dirs(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first: what making ``path``
    would create (so that a failure can remove exactly that, and nothing that was there)."""
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_empty(dirs: list[Path]) -> None:
    """Remove these directories, deepest first, while they are empty (rmdir never removes a
    directory that holds anything)."""
    for directory in dirs:
        try:
            directory.rmdir()
        except OSError:
            break
