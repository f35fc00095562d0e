"""A run directory from someone else never runs its code: the task file its records name is
imported by resume=, dlrun-eval (of the run, or of one of its checkpoints) and dlrun-rerun only
when the user names it (task_file=PATH) or confirms it (--trust-task-file) (docs/faults.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dlrun.commands import evaluate as evaluation
from dlrun.commands import rerun
from tests.conftest import call_main, run_cli

WAVE = Path(__file__).parents[2] / "examples" / "wave" / "wave.py"
QUIET = ("trainer.plots=false", "trainer.progress=false", "device=cpu")


@pytest.fixture
def received(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A run made with a task file, then "received": the file now writes a marker on import."""
    task = tmp_path / "theirs" / "wave.py"
    task.parent.mkdir()
    shutil.copy(WAVE, task)
    run_dir = tmp_path / "run"
    r = run_cli(
        f"task={task}", *QUIET, "trainer.epochs=4", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    marker = tmp_path / "ran"
    task.write_text(task.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    return run_dir, task, marker


def _refused(err: str, prog: str, task: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert f"made with the task file {task}" in lines[0]
    assert f"task_file={task}" in lines[0] and "--trust-task-file" in lines[0]


def test_a_received_run_directory_never_imports_its_task_file(
    received, tmp_path: Path, capsys
) -> None:
    run_dir, task, marker = received
    r = run_cli(f"resume={run_dir}", "trainer.epochs=6", cwd=tmp_path)
    assert r.returncode == 2
    _refused(r.stderr, "dlrun", task)
    for target in (run_dir, run_dir / "checkpoints" / "best.pt"):
        code, _, err = call_main(evaluation.main, capsys, target)
        assert code == 2
        _refused(err, "dlrun-eval", task)
    code, _, err = call_main(rerun.main, capsys, run_dir, f"hydra.run.dir={tmp_path}/again")
    assert code == 2
    _refused(err, "dlrun-rerun", task)
    assert not marker.exists()  # its code never ran
    assert not (tmp_path / "again").exists()


def test_a_task_file_named_or_trusted_is_imported(received, tmp_path: Path, capsys) -> None:
    run_dir, task, marker = received
    code, out, err = call_main(evaluation.main, capsys, run_dir, f"task_file={task}")
    assert code == 0, err
    assert marker.exists()
    marker.unlink()
    r = run_cli(f"resume={run_dir}", "trainer.epochs=6", "--trust-task-file", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert marker.exists()
