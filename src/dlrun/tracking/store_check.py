"""A store that cannot be used is refused before any work, in one line, without mlflow's import
(``dlrun --help`` and config errors stay fast)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from dlrun.errors import DlrunError
from dlrun.tracking.worker import sqlite_path


def _refuse(uri: str, why: str) -> DlrunError:
    return DlrunError(
        f"logger.mlflow.tracking_uri={uri} cannot be used: {why}; expected a running tracking "
        "server or a writable directory (logger.mlflow.tracking_uri=, MLFLOW_TRACKING_URI)"
    )


def check_store(uri: str, timeout_s: float = 5.0) -> None:
    """Refuse, in one line, a store that cannot be reached or written (without importing mlflow)."""
    if uri.startswith(("http://", "https://")):
        try:  # the tracking server's own health endpoint
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
                if r.status != 200:
                    raise _refuse(uri, f"the server answered {r.status}")
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
            reason = getattr(exc, "reason", exc)
            raise _refuse(uri, f"the tracking server does not answer ({reason})") from None
        return
    db = sqlite_path(uri)
    if db is not None:
        where = db.parent
    elif uri.startswith("file:"):  # a directory of runs (file:///abs/path)
        where = Path("/" + uri[len("file:") :].lstrip("/"))
    elif ":" not in uri:  # a plain directory
        where = Path(uri)
    else:
        return  # another database: mlflow says what is wrong when the worker connects
    if not where.is_dir():
        raise _refuse(uri, f"{where} is not a directory")
    if not os.access(where, os.W_OK) or (
        db is not None and db.exists() and not os.access(db, os.W_OK)
    ):
        raise _refuse(uri, f"{db if db is not None and db.exists() else where} is not writable")
