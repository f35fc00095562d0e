"""Sweeps that meet each other or their own jobs: a job resumed on its own (`dlrun
resume=<sweep>/<job>`, as docs/sweeps.md says) still belongs to its sweep, which then goes on
(docs/faults.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SWEEP = ("-m", "task=sine-bp", "seed=1,2", "trainer.epochs=3", "trainer.plots=false")


def test_a_job_resumed_on_its_own_never_blocks_its_sweep(dlrun, tmp_path: Path) -> None:
    sweep = tmp_path / "sw"
    r = dlrun(*SWEEP, f"hydra.sweep.dir={sweep}")
    assert r.code == 0, r.err
    r = dlrun(f"resume={sweep}/0", "trainer.epochs=5")  # extended on its own
    assert r.code == 0, r.err
    shutil.rmtree(sweep / "1")  # a job that never ran
    r = dlrun(*SWEEP, f"hydra.sweep.dir={sweep}")
    assert r.code == 0, r.err
    assert "job 0: completed earlier, skipped" in r.out
    summaries = [json.loads((sweep / j / "summary.json").read_text()) for j in ("0", "1")]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert summaries[0]["epochs_completed"] == 5  # the job's own resume stands
    assert summaries[1]["epochs_completed"] == 3


def _job_records(sweep: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(sweep)): p.read_bytes() for p in sorted(sweep.glob("*/.hydra/*.yaml"))
    }


def test_another_sweep_into_a_running_sweeps_directory_changes_nothing(tmp_path: Path) -> None:
    from tests.rundir.test_writers import LONG, one_error_line, start, wait_for

    sweep = tmp_path / "sw"
    first = start("-m", *LONG, "seed=1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    try:
        wait_for(lambda: (sweep / "0" / "checkpoints" / "last.pt").is_file(), first)
        records = _job_records(sweep)
        # the same first job (seed=1), another second one: refused before any job's record
        second = start("-m", *LONG, "seed=1,3", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        line = one_error_line(err)
        assert "being written by another sweep" in line and f"pid {first.pid}" in line
        assert _job_records(sweep) == records
        assert first.poll() is None  # the first sweep goes on
    finally:
        first.kill()
        first.communicate()
