"""How the run directory's records are read and written: the strict readers of the records
written whole (a damaged one is :class:`Damaged`, naming the file and what to do), metrics.jsonl's
lines, atomic JSON, and overrides as Hydra tokens. The policy is layout.py's docstring; its names
(and these) are used through dlrun.rundir.layout, which owns the file names.

Torch-free: the CLI, the report and sweeps use it before (or without) importing torch.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from dlrun.errors import DlrunError
from dlrun.rundir import atomic as files


class Damaged(DlrunError):
    """A record file that is not what dlrun wrote: one line naming it and what to do."""

    def __init__(self, path: Path, reason: str, remedy: str) -> None:
        super().__init__(f"{path}: damaged ({reason}); {remedy}")
        self.path = path


REMEDY_SUMMARY = (
    "repair it, or delete it: the run's checkpoints and metrics are intact, and the next resume "
    "writes a new one"
)
REMEDY_YAML = "restore it from a copy or repair it by hand (Hydra wrote it as YAML)"


# what a record written whole may weigh: dlrun writes a few KiB; metrics.jsonl grows by a line
# an epoch (a 1 GiB one is tens of millions of rows)
RECORD_BYTES, METRICS_BYTES = 16 << 20, 1 << 30


class NotRegular(OSError):
    """A FIFO, a device or a socket where a record should be: reading it could block for ever."""


def read_bounded(path: Path, limit: int) -> str:
    """The text of a regular file of at most ``limit`` bytes; a FIFO, device or socket is
    refused without blocking (NotRegular), a larger file is a ValueError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > limit:
            raise ValueError(f"{info.st_size} bytes, more than a record holds ({limit})")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"more than {limit} bytes, more than a record holds")
    return data.decode()


def _read_text(path: Path, remedy: str) -> str | None:
    """A record's text: None when absent, Damaged when not text (or not a regular file, or
    larger than a record), one line when unreadable."""
    try:
        return read_bounded(path, RECORD_BYTES)
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise Damaged(path, "not text", remedy) from None
    except NotRegular:
        raise Damaged(path, "not a regular file", remedy) from None
    except ValueError as exc:
        raise Damaged(path, str(exc), remedy) from None
    except OSError as exc:
        raise DlrunError(f"cannot read {files.describe(exc)}") from None


def read_record(path: Path, remedy: str) -> dict[str, Any] | None:
    """A JSON record that is written whole: None when absent, Damaged when not a JSON object."""
    text = _read_text(path, remedy)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Damaged(path, f"not JSON: {str(exc)[:80]}", remedy) from None
    except RecursionError:
        raise Damaged(path, "nested deeper than any record", remedy) from None
    if not isinstance(data, dict):
        raise Damaged(path, f"a JSON {type(data).__name__}, not an object", remedy)
    return data


def read_yaml(path: Path) -> Any:
    """One of Hydra's `.hydra/*.yaml` records as plain data: None when absent, Damaged when it
    cannot be read as YAML."""
    import yaml

    text = _read_text(path, REMEDY_YAML)
    if text is None:
        return None
    try:
        data = yaml.load(text, Loader=_no_aliases())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())[:80]
        raise Damaged(path, f"not YAML: {reason}", REMEDY_YAML) from None
    except RecursionError:
        raise Damaged(path, "nested deeper than any record", REMEDY_YAML) from None
    if data is None:  # Hydra writes [] or {} for nothing: an empty file was cut short
        raise Damaged(path, "empty", REMEDY_YAML)
    return data


@functools.cache
def _no_aliases() -> type:
    import yaml

    class NoAliases(yaml.SafeLoader):
        """Hydra writes no anchors or aliases: one in a record is refused, so that a few
        hundred bytes of aliases cannot expand into gigabytes (a "billion laughs")."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, "an alias (Hydra writes none)", event.start_mark
                )
            return super().compose_node(parent, index)

    return NoAliases


def read_metrics(path: Path, required: bool = False) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (see the module docstring for a damaged line)."""
    try:
        text = read_bounded(path, METRICS_BYTES)
    except FileNotFoundError:
        if required:
            raise DlrunError(f"cannot read {path}: no such file") from None
        return []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DlrunError(f"cannot read {path}: {reason}") from None
    lines = text.splitlines()
    cut_short = bool(lines) and not text.endswith("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if _is_row(row):
            rows.append(row)
        elif not (cut_short and number == len(lines)):
            raise DlrunError(
                f"{path}: line {number} is not a metrics row (damaged); repair or delete that "
                "line, or remove the file"
            )
    return rows


def _is_row(row: Any) -> bool:
    """What dlrun writes: an int epoch, a split name, numbers (null for NaN/inf)."""
    if not isinstance(row, dict) or not isinstance(row.get("split"), str):
        return False
    epoch = row.get("epoch")
    values = [v for k, v in row.items() if k != "split"]
    return isinstance(epoch, int) and not isinstance(epoch, bool) and all(map(_is_number, values))


def _is_number(value: Any) -> bool:
    """A metric's value as JSON holds it: a number, or null for NaN/inf."""
    return isinstance(value, int | float | None) and not isinstance(value, bool)


def metrics_line(row: dict[str, Any]) -> str:
    """One metrics.jsonl line (NaN/inf as null: JSON has neither)."""
    return json.dumps(_clean(row)) + "\n"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than produce invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def json_text(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Atomically (a reader never sees half a file)."""
    with files.replace(path) as f:
        f.write(json_text(obj))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record, or None when absent or damaged (the records that are rewritten whole)."""
    try:
        data = json.loads(read_bounded(path, RECORD_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- overrides


def unquote(value: str) -> str:
    """A value as typed for Hydra (``'my run'`` or ``my run``) -> the plain value (the inverse
    of :func:`quote`, Hydra's rules: a backslash escapes only a quote or the string's end)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        q, inner = value[0], value[1:-1]
        inner = re.sub(r"(\\*)\\" + q, lambda m: m.group(1)[: len(m.group(1)) // 2] + q, inner)
        return re.sub(r"(\\+)$", lambda m: m.group(1)[: len(m.group(1)) // 2], inner)
    return value


def token(value: str) -> str:
    """A value as one Hydra override token, quoted only when it must be (a recorded override
    then reads as the user would have typed it)."""
    return value if re.fullmatch(r"[\w./:@+-]+", value) else quote(value)


def quote(value: str) -> str:
    """A value as one Hydra override token (a path with spaces, quotes or non-ASCII letters
    stays one value): single quotes; backslashes doubled only before a quote or at the end."""
    inner = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    inner = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, inner)
    return f"'{inner}'"
