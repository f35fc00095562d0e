"""The Python API: ``dlrun.run(...)`` and ``dlrun.sweep(...)`` for a notebook or a script.

Each call is the `dlrun` command run in this process (cli.invoke: the same overrides, the same
checks, the same run directory), so a mistake raises DlrunError with the line the command would
print. Nothing is left behind for the next call: sys.argv and Hydra's global state are restored
by cli.invoke, as are the logging handlers (a notebook's own log lines never land in a finished
run's dlrun.log). Torch-free at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import DlrunError
from dlrun.rundir import RunDir, Summary, quote, read_json

if TYPE_CHECKING:
    from torch import nn


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

    def load_model(self, which: str = "best", *overrides: str) -> nn.Module:
        """The trained model from checkpoints/best.pt (``which="last"``: last.pt), in eval mode,
        built from the run's recorded config (``overrides`` change it, e.g. ``device=cpu``)."""
        from dlrun import evaluation

        if which not in evaluation.WHICH:
            raise DlrunError(f"which={which!r}: expected one of {', '.join(evaluation.WHICH)}")
        path, run = evaluation.target(str(self.run_dir), which)
        return evaluation.load(path, run, list(overrides)).model


def run(*overrides: str, run_dir: str | Path | None = None) -> Result:
    """One run, as ``dlrun OVERRIDES...`` (``run_dir``: its directory, else Hydra's default
    outputs/<date>/<time>/); ``resume=...`` continues a run."""
    argv = list(overrides)
    if run_dir is not None:
        argv.append(f"hydra.run.dir={quote(str(run_dir))}")
    ran = _invoke(argv)
    if not ran:  # e.g. --cfg job: nothing ran
        raise DlrunError(f"dlrun {' '.join(argv)} ran nothing: expected overrides of one run")
    return Result(ran[-1])


def sweep(*overrides: str, sweep_dir: str | Path | None = None) -> list[Result]:
    """A multirun, as ``dlrun -m OVERRIDES...``: every job's result, in job order (jobs run by
    a parallel launcher in other processes included, from the sweep's manifest)."""
    from dlrun import multirun

    argv = ["-m", *overrides]
    if sweep_dir is not None:
        argv.append(f"hydra.sweep.dir={quote(str(sweep_dir))}")
    _invoke(argv)
    where = multirun.current_dir
    manifest = read_json(where / multirun.MANIFEST) if where is not None else None
    if where is None or manifest is None:
        raise DlrunError(f"dlrun {' '.join(argv)} made no sweep")
    return [Result((where / job["dir"]).absolute()) for job in manifest.get("jobs", [])]


def _invoke(argv: list[str]) -> list[Path]:
    from dlrun import cli

    return cli.invoke(argv)
