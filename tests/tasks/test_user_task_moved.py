"""A task moved from a file into an installed package (the way docs/extending.md recommends)
keeps its runs: resume, rerun and eval of a run made from the file work through the package when
it is the same task; when the two differ, the line says how to choose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tasks.test_user_task_errors import TASK, write_task

QUIET = ("trainer.plots=false", "trainer.progress=false")
YAML = "trainer:\n  epochs: 2\n  batch_size: 16\n"
TRUST = "--trust-task-file"  # the file is the user's own: comparing it runs its code


def install(site: Path, source: str) -> Path:
    """A distribution as pip installs one: the package, its YAML as package data, and its
    dist-info with the dlrun.tasks entry point."""
    package = site / "dlrun_mine"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    (package / "mine.yaml").write_text(YAML)
    info = site / "dlrun_mine-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dlrun-mine\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dlrun.tasks]\nmine = dlrun_mine\n")
    return site


def command(site: Path, cwd: Path, module: str, *args: object) -> subprocess.CompletedProcess:
    """One of dlrun's commands in a fresh process that sees the installed package."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def made_from_a_file(dlrun, tmp_path: Path) -> Path:
    path = write_task(tmp_path / "project", TASK)
    (path.parent / "mine.yaml").write_text(YAML)
    r = dlrun(f"task={path}", *QUIET)
    assert r.code == 0, r.err
    assert any(o.startswith("task_file=") for o in r.summary()["overrides"])
    return r.run_dir


def epochs(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row["epoch"] for row in map(json.loads, lines) if row["split"] == "val"]


@pytest.mark.slow
def test_a_run_made_from_the_file_resumes_reruns_and_evaluates_through_the_package(
    made_from_a_file: Path, tmp_path: Path
) -> None:
    run = made_from_a_file
    site = install(tmp_path / "site", TASK)
    # the file still there and trusted (it is the user's), the same task: the package runs it
    r = command(site, tmp_path, "dlrun", f"resume={run}", "trainer.epochs=3", *QUIET, TRUST)
    assert r.returncode == 0, r.stderr
    assert epochs(run) == [1, 2, 3]
    (tmp_path / "project" / "mine.py").unlink()  # moved: the file is gone
    again = f"hydra.run.dir={tmp_path}/again"
    r = command(site, tmp_path, "dlrun.commands.rerun", run, "--verify", again)
    assert r.returncode == 0, r.stderr
    assert "reproduced" in r.stdout and "task_file" not in r.stdout.split("\n")[0]
    r = command(site, tmp_path, "dlrun.commands.evaluate", run)
    assert r.returncode == 0, r.stderr
    assert "mse" in r.stdout


@pytest.mark.slow
def test_a_package_that_differs_from_the_file_says_how_to_choose(
    made_from_a_file: Path, tmp_path: Path
) -> None:
    run = made_from_a_file
    changed = TASK.replace("    hidden: int = 8\n", "    hidden: int = 8\n    depth: int = 1\n")
    site = install(tmp_path / "site", changed)
    r = command(site, tmp_path, "dlrun", f"resume={run}", "trainer.epochs=3", *QUIET, TRUST)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"task file {tmp_path / 'project' / 'mine.py'} and entry point mine" in line
    assert "two tasks named mine, and their task.* differ" in line
    assert "task=mine" in line and "task_file=null" in line and "uninstall dlrun-mine" in line
    assert epochs(run) == [1, 2]  # nothing changed
    # choosing the package, as the line says
    r = command(site, tmp_path, "dlrun", f"resume={run}", "task_file=null", "trainer.epochs=3")
    assert r.returncode == 0, r.stderr
    assert epochs(run) == [1, 2, 3]
