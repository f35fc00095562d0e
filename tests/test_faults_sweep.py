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
