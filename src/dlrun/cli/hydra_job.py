"""The one reader of Hydra's runtime config: what a job needs from it, as a :class:`RunInfo`."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from dlrun.rundir import layout
from dlrun.runs.info import REPRODUCES_ENV, RunInfo
from dlrun.sweeps import manifest as multirun


def run_info() -> RunInfo:
    """This job's run directory, choices and overrides, and its sweep's, read from Hydra once."""
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = Path(hydra_cfg.sweep.dir) if in_sweep else None
    reproduces = os.environ.get(REPRODUCES_ENV)
    return RunInfo(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        choices=dict(hydra_cfg.runtime.choices),
        overrides=[str(o) for o in hydra_cfg.overrides.task],
        in_sweep=in_sweep,
        record_subdir=hydra_cfg.output_subdir,
        sweep_dir=sweep_dir,
        sweep_overrides=(
            multirun.sweep_overrides(sweep_dir, dict(hydra_cfg.sweeper.get("params") or {}))
            if sweep_dir is not None
            else []
        ),
        reproduces=Path(reproduces) if reproduces else None,
        stop_file=sweep_dir / layout.STOP if sweep_dir is not None else None,
        job_num=int(hydra_cfg.job.num)
        if in_sweep and hydra_cfg.job.get("num") is not None
        else None,
    )
