"""The logger API: what a logger is, and what it is opened with. Torch-free.

A logger receives every row that metrics.jsonl receives (``{"epoch", "split", <metrics>}``)
through :class:`dlrun.rundir.metrics_log.MetricsLog`; the loop knows nothing about it. Each one,
dlrun's own included, is a module holding one :class:`Logger` subclass, found by its entry point
in the group ``dlrun.loggers`` (:mod:`dlrun.tracking.registry`), so that adding one touches no
other module: its settings are ``logger.<name>``, chosen with ``logger=[jsonl,<name>]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dlrun.rundir.layout import RunDir

KEYS = ("epoch", "split")  # every row's coordinates; the rest are metrics


@dataclass(frozen=True)
class RunContext:
    """The run a logger is opened for, as plain values."""

    run_dir: RunDir
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl's rows so far
    resume_epoch: int | None = None  # a resumed run: the checkpoint's epoch
    name: str | None = None  # the run's readable name
    plain: dict[str, Any] = field(default_factory=dict)  # the run's whole config
    writes: bool = True  # this process writes the run's records (rank 0 under torchrun)
    task: str = ""  # the task's name
    tags: dict[str, Any] = field(default_factory=dict)  # task, optimizer, device, seed
    sweep_dir: Path | None = None  # a sweep's job: the sweep's directory
    sweep_overrides: list[str] = field(default_factory=list)  # the whole sweep's, as typed
    parent_name: str | None = None  # a sweep's job: the sweep's readable name
    reproduces: Path | None = None  # dlrun-rerun: the run directory this one runs again
    early: Any = None  # what the logger's prepare() returned when the command started
    say: Callable[[str], None] | None = None  # a line on the console (None in a sweep)


class Logger:
    """A destination for the metrics rows. A subclass names itself (``name``, the option of
    the ``logger`` group) and, when it has settings, their dataclass (``settings``, with an
    ``enabled: bool = False`` field its YAML sets true); without one, ``logger.<name>`` is a
    bool. ``needs``: the module it imports, refused in one line when missing (the extra of
    the same name installs it)."""

    name: ClassVar[str]
    settings: ClassVar[type | None] = None
    needs: ClassVar[str | None] = None
    error: str | None = None  # the first failure after the start, noted in summary.json

    def __init__(self, settings: Any, run: RunContext) -> None:
        self.run = run

    @classmethod
    def prepare(cls, settings: Any, main: bool) -> Any:
        """When the command starts, before torch: refuse an unusable destination in one line,
        or start what the run takes over (its ``run.early``; ``release()``d if unused)."""
        return None

    @classmethod
    def open(cls, settings: Any, run: RunContext) -> Logger | None:
        """The logger for a run when the loop starts; by default only where records are written."""
        return cls(settings, run) if run.writes else None

    @classmethod
    def end_sweep(cls, sweep_dir: Path, manifest: dict[str, Any], status: str | None) -> None:
        """After a sweep's last job (``status`` None: from its jobs')."""

    def append(self, row: dict[str, Any]) -> None:
        """One row, as metrics.jsonl gets it."""

    def close(self) -> None:
        """The loop has ended: no more rows."""

    def finish(self, status: str) -> None:
        """The run has ended (completed, failed, diverged, interrupted); its records are final."""

    def where(self) -> str | None:
        """A closing line saying where to see the run (None: nothing to say)."""
        return None


def folder_name(name: str) -> str:
    """The run's name as a folder name (TensorBoard lists a run by its folders): no ``/``."""
    return name.replace("/", "-").replace("\0", "").strip(". ") or "run"


def flat_settings(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"trainer.batch_size": 64, ...}``: lists as text, unset (None)
    values and off loggers left out, they say nothing about the run."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_settings(value, name + "."))
        elif value is None or (name.startswith("logger.") and value is False):
            continue
        else:
            out[name] = value if isinstance(value, bool | int | float | str) else str(value)
    return out
