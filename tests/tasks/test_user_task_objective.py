"""An objective that is not a key of what evaluate() returns stops the run at its first
validation, in one line naming the keys evaluate() has: no run ends `completed` with a null
objective, an empty best column and no best.pt."""

from __future__ import annotations

from pathlib import Path

from tests.tasks.test_user_task_errors import TASK, write_task

QUIET = ("trainer.plots=false", "trainer.progress=false")
WRONG = TASK.replace('objective = "mse"', 'objective = "val_mse"')


def test_an_objective_evaluate_does_not_return_stops_the_first_validation(
    dlrun, tmp_path: Path
) -> None:
    path = write_task(tmp_path, WRONG)
    r = dlrun(
        f"task={path}",
        *QUIET,
        "trainer.epochs=6",
        "trainer.validate_every=3",
        "trainer.checkpoint_every=1",
    )
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("dlrun: error: task mine: its objective 'val_mse' (")
    assert f"{path}:" in lines[0]
    assert "is not a key of what evaluate() returns (loss, mse)" in lines[0]
    summary = r.summary()
    assert summary["status"] == "failed" and summary["epochs_completed"] == 2  # stopped at 3
    assert not any(row["split"] == "val" for row in r.metrics())


def test_at_the_first_epoch(dlrun, tmp_path: Path) -> None:
    r = dlrun(f"task={write_task(tmp_path, WRONG)}", *QUIET, "trainer.validate_every=1")
    assert r.code == 2 and "(loss, mse)" in r.err
    assert r.summary()["status"] == "failed" and r.summary()["epochs_completed"] == 0


def test_the_right_objective_ranks_the_run(dlrun, tmp_path: Path) -> None:
    r = dlrun(f"task={write_task(tmp_path, TASK)}", *QUIET, "trainer.epochs=2")
    assert r.code == 0, r.err
    assert r.summary()["objective"] is not None
    assert (r.run_dir / "checkpoints" / "best.pt").is_file()
