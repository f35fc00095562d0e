"""Numbers read from data files, refused with the file, line and column when they are not
numbers, or not numbers the model's float32 arithmetic can hold."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from dlrun.errors import DlrunError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

FLOAT32_MAX = 3.4028234663852886e38


def squared_limit(terms: int = 1) -> float:
    """The largest |value| whose squared differences, summed over ``terms`` (points times
    dimensions), stay finite in float32: a loss or a distance squares what it is given and sums
    the squares, so a single 1e20 is already inf there."""
    return math.sqrt(FLOAT32_MAX / max(1, terms)) / 2


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


def check_size(
    values: np.ndarray,
    where: str,
    limit: float,
    lines: list[int] | None = None,
    columns: Sequence[str] | None = None,
) -> None:
    """The first value of a table (rows, columns) beyond ``limit`` in size, refused where it was
    read: by line and column for a CSV (``lines``: each row's line; ``columns``: the names), by
    element for an array read whole (a .npy file)."""
    import numpy as np

    bad = np.argwhere(np.abs(values) > limit)
    if not len(bad):
        return
    row, col = (int(i) for i in bad[0])
    if lines is None:
        place = f"element [{row}, {col}]: {values[row, col]:g} is"
    else:
        name = columns[col] if columns is not None else col + 1
        place = f"line {lines[row]}, column {name}: {values[row, col]:g} is"
    raise DlrunError(
        f"{where}: {place} too large for the model's float32 arithmetic (expected |value| <= "
        f"{limit:.3g}); rescale the data"
    )
