"""Disks that fail for real: a small tmpfs that fills up, read-only mounts, a user without write
permission. Each ends as one line with what to fix, exit 2, `failed` where it can be written.

Mounting needs root (the tests skip without it); root ignores mode bits, so a permission is tested
in a subprocess that drops to the `nobody` user.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlrun.engine import checkpoint

QUIET = ("trainer.plots=false", "trainer.progress=false")
# long enough to fill a small disk with metrics rows, one row per epoch
FOREVER = (
    "task=sine-bp",
    "trainer.epochs=100000",
    "trainer.log_every=1",
    "trainer.validate_every=1",
)


def _mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here ({r.stderr.strip()})")


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (a directory) made read-only by a bind mount over itself."""
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,ro,bind", str(path))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dlrun: error: ")
    return lines[0]


def status(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["status"]


def test_a_disk_that_fills_while_metrics_are_appended(dlrun, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1300k") as disk:
        # on the CPU, which writes a row an epoch at a pace this test was sized for
        args = (*FOREVER, *QUIET, "trainer.checkpoint_every=100000", "device=cpu")
        r = dlrun(*args, run_dir=disk / "run")
        assert r.code == 2
        line = one_line(r.err)
        assert "metrics.jsonl: No space left on device" in line
        assert "free some space" in line and "no checkpoint was written" in line
        assert "Traceback" not in r.out + r.err
        assert status(r.run_dir) == "failed"  # rewritten in place: no room for a temp file


def test_a_full_disk_after_a_relative_resume_names_the_checkpoint_it_keeps(
    dlrun, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", "2600k") as disk:
        first = dlrun("task=sine-bp", *QUIET, "trainer.epochs=300", run_dir=disk / "run")
        assert first.code == 0, first.err
        filler = fill(disk, 1100 << 10)  # the 1 MiB write probe passes, training fills the rest
        relative = os.path.relpath(first.run_dir, Path.cwd())
        r = dlrun(f"resume={relative}", *FOREVER[1:], "trainer.checkpoint_every=50")
        assert r.code == 2
        line = one_line(r.err)
        assert "No space left on device" in line and "free some space" in line
        held = checkpoint.load(first.run_dir / "checkpoints" / "last.pt")["epoch"]
        assert held >= 300
        assert f"last.pt still holds epoch {held}" in line
        assert f"continue with: dlrun resume={first.run_dir}" in line
        assert status(first.run_dir) == "failed"
        filler.unlink()  # space again: the run goes on from that checkpoint
        again = dlrun(f"resume={relative}", f"trainer.epochs={held + 10}", "trainer.log_every=100")
        assert again.code == 0, again.err
        assert f"at epoch {held}" in again.out
        assert status(first.run_dir) == "completed"


def test_a_read_only_checkpoints_directory_is_not_called_a_full_disk(dlrun, tmp_path: Path) -> None:
    first = dlrun("task=sine-bp", *QUIET, "trainer.epochs=20")
    assert first.code == 0, first.err
    before = (first.run_dir / "checkpoints" / "last.pt").read_bytes()
    with read_only(first.run_dir / "checkpoints"):
        r = dlrun(f"resume={first.run_dir}", "trainer.epochs=40", "trainer.checkpoint_every=10")
    assert r.code == 2
    line = one_line(r.err)
    assert "Read-only file system" in line and "remount it read-write" in line
    assert "free some space" not in line
    assert "last.pt still holds epoch 20" in line
    assert (first.run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert status(first.run_dir) == "failed"


def test_a_read_only_run_directory_changes_nothing(dlrun, tmp_path: Path) -> None:
    first = dlrun("task=sine-bp", *QUIET, "trainer.epochs=5", run_dir=tmp_path / "ro" / "run")
    assert first.code == 0, first.err
    summary = (first.run_dir / "summary.json").read_bytes()
    with read_only(tmp_path / "ro"):
        r = dlrun(f"resume={first.run_dir}", "trainer.epochs=10")
        assert r.code == 2
        line = one_line(r.err)
        assert "Read-only file system" in line and "resume the copy" in line
        new = dlrun("task=sine-bp", *QUIET, run_dir=tmp_path / "ro" / "new")
        assert new.code == 2
        assert "Read-only file system" in one_line(new.err) and "hydra.run.dir=" in new.err
    assert (first.run_dir / "summary.json").read_bytes() == summary
    assert not (tmp_path / "ro" / "new").exists()


def test_plots_on_a_read_only_directory_fail_the_run_and_resume_finishes_it(
    dlrun, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "plots").mkdir(parents=True)
    with read_only(run_dir / "plots"):
        r = dlrun("task=sine-bp", "trainer.progress=false", "trainer.epochs=5", run_dir=run_dir)
        assert r.code == 2
        line = one_line(r.err)
        assert "Read-only file system" in line and "last.pt still holds epoch 5" in line
        assert status(run_dir) == "failed"
    again = dlrun(f"resume={run_dir}", "trainer.progress=false")
    assert again.code == 0, again.err
    assert status(run_dir) == "completed" and (run_dir / "plots").iterdir()


# root without the capabilities that let it ignore mode bits: a user like any other
AS_A_USER = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop capabilities")
def test_a_run_directory_without_write_permission(dlrun, tmp_path: Path) -> None:
    first = dlrun("task=sine-bp", *QUIET, "trainer.epochs=3")
    assert first.code == 0, first.err
    os.chmod(first.run_dir, 0o555)  # mode bits that only root may ignore
    summary = (first.run_dir / "summary.json").read_bytes()
    try:
        r = subprocess.run(
            [
                *AS_A_USER,
                sys.executable,
                "-m",
                "dlrun",
                f"resume={first.run_dir}",
                "trainer.epochs=6",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
    finally:
        os.chmod(first.run_dir, 0o755)
    if r.returncode != 2 and "setpriv" in r.stderr:
        pytest.skip(f"cannot drop capabilities here: {r.stderr.strip()}")
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert "Permission denied" in line and "give this user write access" in line
    assert (first.run_dir / "summary.json").read_bytes() == summary


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop capabilities")
def test_an_unreadable_last_pt_is_named_as_such(dlrun, tmp_path: Path) -> None:
    first = dlrun("task=sine-bp", *QUIET, "trainer.epochs=3")
    assert first.code == 0, first.err
    last = first.run_dir / "checkpoints" / "last.pt"
    os.chmod(last, 0)
    try:
        r = subprocess.run(
            [*AS_A_USER, sys.executable, "-m", "dlrun", f"resume={first.run_dir}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
    finally:
        os.chmod(last, 0o644)
    if r.returncode != 2 and "setpriv" in r.stderr:
        pytest.skip(f"cannot drop capabilities here: {r.stderr.strip()}")
    line = one_line(r.stderr)
    assert "last.pt: not readable (permission denied)" in line and "truncated" not in line
    assert checkpoint.load(last)["epoch"] == 3  # it was intact all along
