"""A file dlrun cannot read or write is one line, never a traceback: dlrun-eval of a run this
user may read but not write, dlrun-eval on a full disk, resume with checkpoints/ closed, rerun
and eval with .hydra/ closed (docs/faults.md). Root ignores mode bits: these run the commands
with the capabilities that let it dropped (setpriv); a full disk is a small tmpfs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract.test_disk_faults import AS_A_USER, QUIET, fill, small_disk

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")


def as_a_user(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    r = subprocess.run(
        [*AS_A_USER, sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    if r.returncode != 2 and "setpriv" in r.stderr:
        pytest.skip(f"cannot drop capabilities here: {r.stderr.strip()}")
    return r


def one_line(r: subprocess.CompletedProcess, prog: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr[-3000:])
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


@pytest.fixture
def run_dir(dlrun, tmp_path: Path) -> Path:
    r = dlrun("task=sine-bp", *QUIET, "trainer.epochs=3", run_dir=tmp_path / "run")
    assert r.code == 0, r.err
    return r.run_dir


def test_closed_directories_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / ".dlrun.lock").unlink()  # a run received from elsewhere: no lock file yet
    os.chmod(run_dir, 0o555)
    try:
        eval_ = as_a_user("dlrun.commands.evaluate", str(run_dir), cwd=tmp_path)
        line = one_line(eval_, "dlrun-eval")
        assert "Permission denied" in line and "give this user write access" in line
    finally:
        os.chmod(run_dir, 0o755)
    os.chmod(run_dir / "checkpoints", 0)
    try:
        r = as_a_user("dlrun", f"resume={run_dir}", cwd=tmp_path)
        assert "Permission denied" in one_line(r, "dlrun") and "internal error" not in r.stderr
    finally:
        os.chmod(run_dir / "checkpoints", 0o755)
    os.chmod(run_dir / ".hydra", 0)
    try:
        commands = (
            ("dlrun.commands.evaluate", "dlrun-eval"),
            ("dlrun.commands.rerun", "dlrun-rerun"),
        )
        for module, prog in commands:
            line = one_line(as_a_user(module, str(run_dir), cwd=tmp_path), prog)
            assert ".hydra" in line and "Permission denied" in line
    finally:
        os.chmod(run_dir / ".hydra", 0o755)


def test_dlrun_eval_on_a_full_disk_says_its_record_was_not_written(dlrun, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "2600k") as disk:
        r = dlrun("task=sine-bp", *QUIET, "trainer.epochs=3", run_dir=disk / "run")
        assert r.code == 0, r.err
        fill(disk, 0)
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        e = subprocess.run(
            [sys.executable, "-m", "dlrun.commands.evaluate", str(r.run_dir)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        line = one_line(e, "dlrun-eval")
        assert "not recorded" in line and "No space left on device" in line
        assert "free some space" in line
        assert not list((r.run_dir / "eval").glob("*.json"))
