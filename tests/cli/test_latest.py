"""`latest` for resume=, dlrun-eval and dlrun-rerun: the run under ./outputs/ that started last
(by when Hydra wrote its .hydra/config.yaml), named in one line."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from dlrun.commands import evaluate as evaluation
from dlrun.commands import rerun
from tests.conftest import call_main

QUIET = ("trainer.plots=false", "trainer.progress=false", "device=cpu")
SINE = ("task=sine-bp", "trainer.validate_every=20", "trainer.log_every=20", *QUIET)


def test_latest_is_the_run_that_started_last(dlrun, tmp_path: Path, capsys) -> None:
    older = Path("outputs/day/b")  # its name sorts last, but it started first
    newer = Path("outputs/day/a")
    assert dlrun(*SINE, "trainer.epochs=40", f"hydra.run.dir={older}").code == 0
    assert dlrun(*SINE, "trainer.epochs=40", f"hydra.run.dir={newer}").code == 0
    started = (older / ".hydra/config.yaml").stat().st_mtime_ns
    os.utime(newer / ".hydra/config.yaml", ns=(started + 10**9, started + 10**9))
    untouched = (older / "summary.json").read_text()

    r = dlrun("resume=latest", "trainer.epochs=60")

    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == f"resume=latest: {newer} (the newest run under outputs/)"
    assert r.summary()["epochs_completed"] == 60 and r.run_dir.resolve() == newer.resolve()
    assert (older / "summary.json").read_text() == untouched
    # the run records the directory it resumed, never the word: a rerun replays no `latest`
    (record,) = sorted(newer.glob(".hydra/resume-*/overrides.yaml"))
    assert f"resume={newer}" in list(OmegaConf.load(record))

    code, out, err = call_main(evaluation.main, capsys, "latest")
    assert code == 0, err
    assert out.startswith(f"dlrun-eval latest: {newer} ")
    assert len(list((newer / "eval").glob("*.json"))) == 1

    code, out, err = call_main(rerun.main, capsys, "latest", "hydra.run.dir=again")
    assert code == 0, err
    assert out.startswith(f"dlrun-rerun latest: {newer} ")
    assert Path("again/summary.json").is_file()
