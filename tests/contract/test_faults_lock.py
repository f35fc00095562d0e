"""A lock is trusted only while its file is provably this process's: a run whose directory was
removed (and made again, by hand or by another run) never deletes what is there now, and a
directory removed during start-up is not made again (docs/faults.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from dlrun.rundir import layout as rundir
from dlrun.rundir import lock as dirlock
from tests.rundir.test_writers import LONG, checkpointed, one_error_line, start, wait_for
from tests.runs.test_engine import run, sine_config


def test_a_stopped_run_never_removes_another_runs_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start(*LONG, f"hydra.run.dir={run}", cwd=tmp_path)
    second = None
    try:
        wait_for(checkpointed(run), first)
        first.send_signal(signal.SIGSTOP)  # held mid-epoch while the directory changes hands
        shutil.rmtree(run)
        fifo = tmp_path / "data.csv"
        os.mkfifo(fifo)  # the second run waits in its data loading: only its start-up records
        second = start(
            "task=housing-regression", f"data.path={fifo}", f"hydra.run.dir={run}", cwd=tmp_path
        )
        wait_for(lambda: (run / "summary.json").is_file(), second)
        time.sleep(0.5)
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 2 and "was removed or moved" in one_error_line(err)
        # the second run's directory and records are all still there, and it still runs
        assert (run / "summary.json").is_file() and (run / ".hydra" / "config.yaml").is_file()
        assert second.poll() is None
    finally:
        first.kill()
        if second is not None:
            second.kill()
            second.communicate()
        first.communicate()


def test_a_directory_removed_and_made_again_by_hand_is_left_alone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start(*LONG, f"hydra.run.dir={run}", cwd=tmp_path)
    try:
        wait_for(checkpointed(run), first)
        first.send_signal(signal.SIGSTOP)
        shutil.rmtree(run)
        run.mkdir()  # rm -rf run; mkdir run
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 2 and "was removed or moved" in one_error_line(err)
        assert run.is_dir() and list(run.iterdir()) == []
    finally:
        first.kill()
        first.communicate()


def test_a_directory_removed_during_start_up_is_not_made_again(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    lock = dirlock.acquire(run_dir)  # as the CLI takes it before Hydra writes anything
    try:
        shutil.rmtree(run_dir)  # removed before the run wrote its first record
        with pytest.raises(rundir.RunDirGone, match="was removed or moved"):
            run(sine_config(5), run_dir)
        assert not run_dir.exists()  # no summary saying `running`, nothing at all
    finally:
        lock.release()


def test_a_lock_file_replaced_in_place_is_not_trusted(tmp_path: Path) -> None:
    lock = dirlock.acquire(tmp_path / "run")
    try:
        assert lock.intact()
        # the same file (inode) rewritten by another process's acquire: another holder's token
        lock.file.write_text(json.dumps({"pid": 1, "token": "another"}))
        assert not lock.intact()
    finally:
        lock.release()
