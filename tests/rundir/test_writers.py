"""One writer per run directory, refusals that delete nothing, runs whose directory or process
went away: made for real, with real processes, real signals and a real lock (docs/faults.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dlrun.cli import main as cli
from dlrun.engine import checkpoint
from dlrun.rundir.lock import NAME as LOCK
from dlrun.sweeps import report
from tests.conftest import call_main

LONG = (
    "task=sine-bp",
    "trainer.epochs=400000",
    "trainer.checkpoint_every=200",
    "trainer.progress=false",
    "trainer.plots=false",
)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """`dlrun ARGS` as a user's shell starts it, in the background."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} early: {proc.communicate()}")
        assert time.time() < end, "timed out"
        time.sleep(0.05)


def checkpointed(run_dir: Path) -> Callable[[], bool]:
    return lambda: (run_dir / "checkpoints" / "last.pt").is_file()


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: "), err
    return lines[0]


def test_a_second_writer_is_refused_naming_the_first(dlrun, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start(*LONG, f"hydra.run.dir={run}", cwd=tmp_path)
    try:
        wait_for(checkpointed(run), first)
        metrics_inode = (run / "metrics.jsonl").stat().st_ino
        for args in (  # a resume, a resume with other settings, a new run into it
            [f"resume={run}"],
            [f"resume={run}", "trainer.epochs=12000", "optimizer.lr=0.2"],
        ):
            second = dlrun(*args)
            line = one_error_line(second.err)
            assert f"{run} is being written by pid {first.pid}" in line, line
            assert f"dlrun {LONG[0]}" in line  # the holder's command, as typed
        new = dlrun(*LONG, f"hydra.run.dir={run}")
        assert new.code == 2 and "already holds a run" in one_error_line(new.err)
        assert not list((run / ".hydra").glob("resume-*"))  # nothing written for them
        assert (run / "metrics.jsonl").stat().st_ino == metrics_inode  # not rewritten
        assert json.loads((run / "summary.json").read_text())["status"] == "running"
    finally:
        code, out, err = stop(first)
    assert code == 130, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and not summary["resumes"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in rows if r["split"] == "train"]
    assert epochs == sorted(set(epochs))  # one writer's rows, in order
    saved = checkpoint.saved_epoch(run / "checkpoints" / "last.pt")
    assert saved == summary["epochs_completed"]


HOLD = """
import sys, time
from pathlib import Path
from dlrun.rundir import lock as dirlock
dirlock.acquire(Path(sys.argv[1]), command="dlrun hydra.run.dir=x")
print("locked", flush=True)
time.sleep(600)
"""


def test_the_lock_is_taken_before_hydra_writes_anything(dlrun, tmp_path: Path) -> None:
    """A new run into a directory another process holds (it has written nothing yet)."""
    target = tmp_path / "fresh"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = dlrun("task=sine-bp", "trainer.epochs=1", f"hydra.run.dir={target}")
        assert f"being written by pid {holder.pid}" in one_error_line(r.err)
        assert [p.name for p in target.iterdir()] == [LOCK]  # no .hydra/, no log
    finally:
        holder.kill()
        holder.wait()
    # the kernel freed the lock with the process: the directory is usable at once
    r = dlrun("task=sine-bp", "trainer.epochs=1", *LONG[3:], f"hydra.run.dir={target}")
    assert r.code == 0, r.err


def test_the_same_sweep_started_twice_runs_each_job_once(tmp_path: Path) -> None:
    args = (
        "-m",
        "task=sine-bp",
        "trainer.epochs=1500",
        "trainer.progress=false",
        "trainer.plots=false",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    procs = [start(*args, cwd=tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    text = "".join(out for out, _ in outputs)
    for job in ("0", "1"):  # one process ran it, the other found it done and skipped it
        assert text.count(f"job {job}: completed earlier, skipped") == 1, text
        job_dir = tmp_path / "sweep" / job
        summary = json.loads((job_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and not summary["resumes"]
        rows = (job_dir / "metrics.jsonl").read_text().splitlines()
        epochs = [json.loads(r)["epoch"] for r in rows if '"train"' in r]
        assert epochs == sorted(set(epochs)) and epochs[-1] == 1500
    manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert manifest["counts"] == {"completed": 2}


@pytest.mark.parametrize(
    ("made", "cwd", "run_dir", "kept"),
    [  # directories made first, where dlrun runs, hydra.run.dir, what must still be there
        (["a/b"], "a/b", "run1", ["a", "a/b"]),  # the report's reproduction
        (["a/b"], "a/b", ".", ["a", "a/b", "a/b/notes.txt"]),  # the user's own files stay
        (["empty"], ".", "empty", ["empty"]),
        ([], ".", "x/y/z", []),
        (["x"], ".", "x/y/z", ["x"]),
        (["outputs"], ".", None, ["outputs"]),  # the default outputs/<date>/<time>
    ],
)
def test_a_refusal_removes_only_what_it_created(
    dlrun, tmp_path: Path, monkeypatch, made, cwd, run_dir, kept
) -> None:
    for directory in made:
        (tmp_path / directory).mkdir(parents=True)
    if "a/b/notes.txt" in kept:
        (tmp_path / "a" / "b" / "notes.txt").write_text("mine\n")
    monkeypatch.chdir(tmp_path / cwd)
    where = [f"hydra.run.dir={run_dir}"] if run_dir else []
    try:
        cli.main(["optimizer.lr=0", *where])
    except SystemExit as exc:
        assert exc.code == 2
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == kept


def test_the_run_directory_removed_while_training_stops_the_run(dlrun, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(*LONG, f"hydra.run.dir={run}", cwd=tmp_path)
    wait_for(checkpointed(run), proc)
    kept = tmp_path / "kept.pt"
    shutil.copy(run / "checkpoints" / "last.pt", kept)
    shutil.rmtree(run)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    line = one_error_line(err)
    assert f"{run} was removed or moved" in line and "cannot be recorded" in line
    assert not run.exists()  # not recreated, not even in part
    # what such a directory leaves, resumed: refused, not a silent new run
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(kept, run / "checkpoints" / "last.pt")
    r = dlrun(f"resume={run}")
    assert "not a run directory" in one_error_line(r.err)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]


def test_the_run_directory_moved_while_training_stops_the_run(tmp_path: Path, capsys) -> None:
    run, moved = tmp_path / "run", tmp_path / "moved"
    proc = start(*LONG, f"hydra.run.dir={run}", cwd=tmp_path)
    wait_for(checkpointed(run), proc)
    run.rename(moved)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "was removed or moved" in one_error_line(err)
    assert not run.exists()
    # its record says running, and no process writes it: the report calls it stale
    code, out, _ = call_main(report.main, capsys, moved)
    assert code == 0 and "│ stale " in out


def test_a_killed_run_is_stale_in_the_report_and_resumes(dlrun, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    proc = start(*LONG, f"hydra.run.dir={run}", cwd=tmp_path)
    wait_for(checkpointed(run), proc)
    code, out, _ = call_main(report.main, capsys, run)
    assert code == 0 and "│ running " in out and "│ stale " not in out  # its lock is held
    proc.kill()
    proc.wait()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    code, out, _ = call_main(report.main, capsys, run)
    saved = checkpoint.saved_epoch(run / "checkpoints" / "last.pt")
    assert code == 0 and "│ stale " in out and "│ running " not in out
    hint = next(line for line in out.splitlines() if "stale" in line and "resume=" in line)
    assert f"last.pt holds epoch {saved}" in hint and hint.endswith(f"dlrun resume={run}")
    r = dlrun(f"resume={run}", f"trainer.epochs={saved + 10}")
    assert r.code == 0, r.err
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_sigterm_while_loading_data_ends_interrupted(tmp_path: Path) -> None:
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)  # reading it blocks until a writer comes: the run waits in its data loading
    run = tmp_path / "run"
    args = ("task=housing-regression", f"data.path={fifo}", f"hydra.run.dir={run}")
    proc = start(*args, cwd=tmp_path)
    wait_for(lambda: (run / "summary.json").is_file(), proc)
    time.sleep(0.5)
    code, out, err = stop(proc, signal.SIGTERM)
    assert code == 143, err
    assert "Traceback" not in out + err
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"


def test_temp_files_of_a_killed_checkpoint_write_are_removed(dlrun, tmp_path: Path) -> None:
    r = dlrun(*LONG[:1], "trainer.epochs=20", *LONG[3:])
    last = r.run_dir / "checkpoints" / "last.pt"
    whole = last.read_bytes()
    # what SIGKILL in the middle of files.replace() leaves: a temp file beside the target
    stale = [last.parent / ".last.pt.k1ll3d.tmp", r.run_dir / ".summary.json.k1ll3d.tmp"]
    stale[0].write_bytes(whole[: len(whole) // 2])
    stale[1].write_text('{"status": ')
    resumed = dlrun(f"resume={r.run_dir}", "trainer.epochs=30")
    assert resumed.code == 0, resumed.err
    assert not any(p.exists() for p in stale)
    assert checkpoint.saved_epoch(last) == 30


def test_a_failed_download_leaves_no_empty_directories(dlrun, tmp_path: Path, monkeypatch) -> None:
    from torchvision import datasets

    # a real download attempt, to a port where nothing listens: it fails at once, offline or not
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    (tmp_path / "data").mkdir()
    r = dlrun("task=mnist", "data.download=true", "data.root=data/sets")
    assert "downloading them failed" in one_error_line(r.err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data"]  # data/ was there before


def test_every_row_of_faults_md_names_a_test_that_exists() -> None:
    root = Path(__file__).resolve().parents[1]  # tests/
    page = (root.parent / "docs" / "faults.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "test_" in line]
    defined = "".join(p.read_text() for p in root.rglob("test_*.py"))
    assert len(rows) >= 10
    for row in rows:
        names = [n.strip("` ") for n in row.rstrip(" |").rsplit("|", 1)[1].split(",")]
        for name in names:
            assert f"def {name}(" in defined, name
