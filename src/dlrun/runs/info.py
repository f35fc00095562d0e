"""What a run takes from Hydra, as plain values: built once by the command
(:func:`dlrun.cli.hydra_job.run_info`), so that a run, and a test, need no Hydra app. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# dlrun-rerun names the run directory that a run reproduces in this variable
REPRODUCES_ENV = "DLRUN_REPRODUCES"


@dataclass(frozen=True)
class RunInfo:
    """What a run takes from Hydra, as plain values."""

    run_dir: Path
    choices: dict[str, Any] = field(default_factory=dict)  # config group -> option chosen
    overrides: list[str] = field(default_factory=list)  # as typed (a sweep job's included)
    in_sweep: bool = False  # the sweep, not the run, says how to go on after an interrupt
    record_subdir: str | None = None  # where Hydra wrote this invocation's .hydra record
    sweep_dir: Path | None = None  # a sweep's job: its MLflow run is the sweep's parent's child
    sweep_overrides: list[str] = field(default_factory=list)  # the whole sweep's, as typed
    reproduces: Path | None = None  # dlrun-rerun: the run directory this one runs again
    stop_file: Path | None = None  # a sweep's: its parent asks the job to stop (interrupt.py)
    job_num: int | None = None  # a sweep's job: its number (the first one shows the header)
    # logger -> what its prepare() started with the command (MLflow's worker): the run takes it
    early: dict[str, Any] = field(default_factory=dict)
