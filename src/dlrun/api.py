"""The Python API: ``dlrun.run(...)`` and ``dlrun.sweep(...)`` for a notebook or a script.

Each call is the `dlrun` command run in this process (:func:`dlrun.cli.main.invoke`: the same
overrides, the same checks, the same run directory), so a mistake raises DlrunError with the
line the command would print. Nothing is left behind for the next call: sys.argv and Hydra's
global state are restored by it, as are the logging handlers (a notebook's own log lines never
land in a finished run's dlrun.log). Torch-free at import.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import DlrunError
from dlrun.rundir.layout import MANIFEST, RunDir
from dlrun.rundir.records import quote, read_json
from dlrun.rundir.summary import Summary

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from dlrun.cli.main import Ran


@dataclass(frozen=True)
class Result:
    """One run's directory, read on demand (a resumed or rerun run reads as it is now)."""

    run_dir: Path

    @property
    def summary(self) -> Summary | None:
        """summary.json, typed (None: the run never wrote one)."""
        return RunDir(self.run_dir).read_summary()

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's rows, one per logged phase ("train" or "val") of an epoch."""
        return RunDir(self.run_dir).read_metrics()

    def __repr__(self) -> str:
        """What a notebook shows for a result: status, name, objective (final and best),
        epochs and the directory."""
        s = self.summary
        if s is None:
            return f"Result(no summary.json yet, run_dir={str(self.run_dir)!r})"
        parts = [s.status or "unknown", repr(s.name) if s.name else None]
        name = s.objective_name
        if name and s.objective is not None:
            parts.append(f"{name}={_number(s.objective)}")
        if name and s.best.get(name) is not None:
            parts.append(f"best {name}={_number(s.best[name])} at epoch {s.best.get('epoch')}")
        parts.append(f"epochs={s.epochs_completed}/{s.epochs}")
        parts.append(f"run_dir={str(self.run_dir)!r}")
        return f"Result({', '.join(p for p in parts if p)})"

    def table(self, split: str | None = None) -> Any:
        """metrics.jsonl as a table, one row per logged phase of an epoch (``split``: only
        "train" or "val" rows): a pandas DataFrame when pandas is installed, else the rows."""
        rows = [r for r in self.metrics if split is None or r["split"] == split]
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    def plot(self) -> Curves:
        """The run's learning curves (plots/curves.png's figure), titled with the run's name;
        a notebook shows it as an image, ``.figure`` is matplotlib's Figure."""
        from dlrun import plots  # matplotlib: only for a plot

        s = self.summary
        objective = (s.objective_name if s else None) or "loss"
        return Curves(plots.curves(self.metrics, objective, title=s.name if s else None))

    def load_model(self, which: str = "best", *overrides: str) -> nn.Module:
        """The trained model from checkpoints/best.pt (``which="last"``: last.pt), in eval mode,
        built from the run's recorded config (``overrides`` change it, e.g. ``device=cpu``)."""
        from dlrun.commands import evaluate as evaluation  # imports torch: only to load a model

        if which not in evaluation.WHICH:
            raise DlrunError(f"which={which!r}: expected one of {', '.join(evaluation.WHICH)}")
        path, run = evaluation.target(str(self.run_dir), which)
        return evaluation.load(path, run, list(overrides)).model


@dataclass(frozen=True)
class Curves:
    """A run's curves: shown as an image in a notebook (``_repr_png_``), saved with ``save``."""

    figure: Figure

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        self.figure.savefig(path, dpi=110)
        return Path(path)


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"


def run(*overrides: str, run_dir: str | Path | None = None) -> Result:
    """One run, as ``dlrun OVERRIDES...`` (``run_dir``: its directory, else Hydra's default
    outputs/<date>/<time>/); ``resume=...`` continues a run."""
    argv = list(overrides)
    if run_dir is not None:
        argv.append(f"hydra.run.dir={quote(str(run_dir))}")
    ran = _invoke(argv).run_dirs
    if not ran:  # e.g. --cfg job: nothing ran
        raise DlrunError(f"dlrun {' '.join(argv)} ran nothing: expected overrides of one run")
    return Result(ran[-1])


def sweep(*overrides: str, sweep_dir: str | Path | None = None) -> list[Result]:
    """A multirun, as ``dlrun -m OVERRIDES...``: every job's result, in job order (jobs run by
    a parallel launcher in other processes included, from the sweep's manifest)."""
    argv = ["-m", *overrides]
    if sweep_dir is not None:
        argv.append(f"hydra.sweep.dir={quote(str(sweep_dir))}")
    where = _invoke(argv).sweep_dir
    manifest = read_json(where / MANIFEST) if where is not None else None
    if where is None or manifest is None:
        raise DlrunError(f"dlrun {' '.join(argv)} made no sweep")
    return [Result((where / job["dir"]).absolute()) for job in manifest.get("jobs", [])]


def _invoke(argv: list[str]) -> Ran:
    # Hydra is imported by the first call, not by naming dlrun.run (test_import_dlrun_is_light)
    from dlrun.cli.main import invoke

    return invoke(argv)
