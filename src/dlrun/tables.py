"""Numbers read from CSV cells, refused with the file, line and column when they are not."""

from __future__ import annotations

import math

from dlrun.errors import DlrunError


def number(cell: str, where: str, line: int, column: str | int) -> float:
    """One finite number, or a DlrunError naming ``where`` (e.g. ``data.path=...``) and the cell."""
    place = f"{where}: line {line}, column {column}"
    if not cell.strip():
        raise DlrunError(f"{place} is empty (missing values are not allowed)")
    try:
        value = float(cell)
    except ValueError:
        raise DlrunError(f"{place}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise DlrunError(f"{place}: {cell!r} (missing or infinite values are not allowed)")
    return value
