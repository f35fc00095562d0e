"""Two sweeps started at the same moment into the same multirun root keep their jobs apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_two_sweeps_started_together_do_not_share_jobs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dlrun",
                "-m",
                "task=sine-bp",
                "trainer.epochs=1",
                "trainer.plots=false",
                f"seed={seeds}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seeds in ("0,1", "2,3")
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    sweeps = sorted((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 2  # one directory per sweep, named to the microsecond
    seeds = []
    for sweep in sweeps:
        jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
        assert [j.name for j in jobs] == ["0", "1"]
        summaries = [json.loads((j / "summary.json").read_text()) for j in jobs]
        assert all(s["status"] == "completed" for s in summaries)
        seeds.append(sorted(s["seed"] for s in summaries))
    assert sorted(seeds) == [[0, 1], [2, 3]]  # every job kept, none overwritten
