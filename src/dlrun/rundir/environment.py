"""env.json: what a run ran on, written once per start or resume (versions, the machine, the
device, the git commit, the command). File names are :mod:`dlrun.rundir.layout`'s."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "dlrun",
    "torch",
    "torchvision",
    "hydra-core",
    "omegaconf",
    "numpy",
    "scikit-learn",
    "rich",
    "matplotlib",
)


def git_commit() -> str | None:
    """The project's commit when dlrun runs from a git checkout (None when installed).

    One ``git status`` call gives both the commit and whether tracked files changed.
    """
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain=v2", "--branch", "-uno"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.splitlines()
    commit = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), None)
    if commit is None or commit == "(initial)":
        return None
    dirty = any(not ln.startswith("#") for ln in lines if ln.strip())
    return commit + ("-dirty" if dirty else "")


def environment(device_name: str) -> dict[str, Any]:
    """env.json's record: versions, the machine, the device, the git commit, the command."""
    import torch  # a run has it loaded already; rundir/ stays torch-free for the others

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "device": device_name,
        "cpu_threads": torch.get_num_threads(),
        "packages": versions,
        "git_commit": git_commit(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cwd": os.getcwd(),
    }
