"""The torch-free packages stay so: each of their modules, imported alone in a fresh interpreter,
leaves torch unloaded (`dlrun --help`, `--cfg job`, config errors, dlrun-report and the other
commands' --help answer in well under a second)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "dlrun"
TORCH_FREE_PACKAGES = ("cli", "commands", "config", "rundir")
TORCH_FREE_MODULES = (
    "dlrun",
    "dlrun.api",
    "dlrun.schema",
    "dlrun.errors",
    "dlrun.compat",
    "dlrun.terminal",
    "dlrun.tasks",
    "dlrun.sweeps.manifest",
    "dlrun.sweeps.report",
    "dlrun.sweeps.report_jobs",
    "dlrun.tracking.mlflow_run",
    "dlrun.tracking.loggers",
    "dlrun.tracking.registry",
    "dlrun.tracking.csv_logger",
    "dlrun.tracking.tensorboard_logger",
    "dlrun.tracking.mlflow_logger",
    # the parts of a run that the command uses before there is work to do
    "dlrun.runs.console",
    "dlrun.runs.info",
    "dlrun.runs.interrupt",
    "dlrun.runs.stop_reasons",
)


def modules_of(package: str) -> list[str]:
    names = []
    for path in sorted((SRC / package).rglob("*.py")):
        parts = ["dlrun", *path.relative_to(SRC).with_suffix("").parts]
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = [m for p in TORCH_FREE_PACKAGES for m in modules_of(p)] + list(TORCH_FREE_MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_it_leaves_torch_unloaded(module: str) -> None:
    probe = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {module} loads torch"
