"""dlrun: one command for small deep-learning experiments, and its Python API.

``dlrun.run(...)``, ``dlrun.sweep(...)`` and ``dlrun.Result`` are loaded on first use
(:mod:`dlrun.api`), so ``import dlrun`` stays light: no torch, no Hydra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlrun.errors import DlrunError

if TYPE_CHECKING:
    from dlrun.api import Result, run, sweep

__version__ = "0.1.0"
__all__ = ["DlrunError", "Result", "__version__", "run", "sweep"]

_API = ("run", "sweep", "Result")


def __getattr__(name: str) -> Any:
    if name in _API:
        from dlrun import api  # keeps Hydra off `import dlrun`

        return getattr(api, name)
    raise AttributeError(f"module 'dlrun' has no attribute {name!r}")
