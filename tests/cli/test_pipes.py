"""A closed output pipe ends every dlrun command quietly (exit 141 or 0, no stderr), through
real pipes: a reader that has already gone, and a shell's `| head -1`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dlrun.terminal import CLOSED_PIPE_EXIT

OLD_RUN = Path(__file__).parents[1] / "data" / "old-run-sine-bp"


def script(module: str) -> list[str]:
    """A console script, as its entry point (the same main())."""
    return [sys.executable, "-c", f"from dlrun.{module} import main; main()"]


def closed_pipe(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose read end is closed before the command writes a byte."""
    read, write = os.pipe()
    os.close(read)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    try:
        return subprocess.run(
            argv, stdout=write, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, timeout=300
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "argv",
    [
        [*script("cli.main"), "--help"],
        [*script("cli.main"), "--cfg", "job", "task=sine-bp"],
        [*script("sweeps.report"), str(OLD_RUN)],
        [*script("commands.rerun"), "--help"],
        [*script("commands.gradcheck"), "--help"],
    ],
    ids=["dlrun --help", "dlrun --cfg job", "dlrun-report", "dlrun-rerun", "dlrun-gradcheck"],
)
def test_a_closed_pipe_ends_a_command_quietly(argv: list[str], tmp_path: Path) -> None:
    r = closed_pipe(argv, tmp_path)
    assert r.returncode in (0, CLOSED_PIPE_EXIT), r.stderr  # 0: argparse drops its lost help
    assert r.stderr == ""  # no "cannot write the run directory", no traceback
    assert not (tmp_path / "outputs").exists()


def test_help_through_head(tmp_path: Path) -> None:
    command = " ".join(shlex.quote(a) for a in [*script("cli.main"), "--help"])
    r = subprocess.run(
        f'{command} | head -1; echo "exit ${{PIPESTATUS[0]}}" >&2',
        shell=True,
        executable="bash",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.stdout.startswith("dlrun: ") and len(r.stdout.splitlines()) == 1
    assert r.stderr.strip() in ("exit 0", f"exit {CLOSED_PIPE_EXIT}"), r.stderr


def test_a_run_whose_pipe_closes_stops_resumably(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = [*script("cli.main"), "task=sine-bp", "trainer.epochs=100000", "device=cpu"]
    r = closed_pipe([*argv, f"hydra.run.dir={run_dir}"], tmp_path)
    assert r.returncode == CLOSED_PIPE_EXIT, r.stderr
    assert r.stderr == ""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"  # not "failed"; stopped at an epoch's end
    assert 1 <= summary["epochs_completed"] < 100000
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert "the output pipe closed" in (run_dir / "dlrun.log").read_text()


def test_a_sweep_whose_pipe_closes_ends_quietly(tmp_path: Path) -> None:
    # Hydra logs "Launching 2 jobs" to stdout first: its log handler must not print a logging
    # traceback for each line after the pipe has closed
    argv = [*script("cli.main"), "-m", "task=sine-bp", "trainer.epochs=2", "seed=0,1", "device=cpu"]
    r = closed_pipe([*argv, f"hydra.sweep.dir={tmp_path / 'sw'}"], tmp_path)
    assert r.returncode == CLOSED_PIPE_EXIT, r.stderr
    assert r.stderr == ""
