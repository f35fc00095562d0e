"""A run directory whose path has spaces and letters beyond ASCII, through every command: the
run, its Ctrl-C hint pasted back into a shell, resume, dlrun-report and dlrun-rerun."""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path

from dlrun.commands import rerun
from dlrun.engine import checkpoint
from dlrun.sweeps import report
from tests.conftest import call_main
from tests.rundir.test_writers import LONG, checkpointed, start, stop, wait_for


def test_my_run_with_spaces_and_umlauts_end_to_end(
    dlrun, tmp_path: Path, monkeypatch, capsys
) -> None:
    run = tmp_path / "my run" / "ü 1"
    # `dlrun ... hydra.run.dir='my run/ü 1'` as typed in a shell: one argument, unquoted
    proc = start(*LONG, "hydra.run.dir=my run/ü 1", cwd=tmp_path)
    wait_for(checkpointed(run), proc)
    code, out, err = stop(proc, signal.SIGINT)
    assert code == 130, err
    hint = next(line for line in (out + err).splitlines() if "continue with: " in line)
    pasted = shlex.split(hint.split("continue with: ", 1)[1])  # what a shell makes of it
    assert pasted == ["dlrun", f"resume={run}"]
    saved = checkpoint.saved_epoch(run / "checkpoints" / "last.pt")
    resumed = dlrun(*pasted[1:], f"trainer.epochs={saved + 100}")
    assert resumed.code == 0, resumed.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == saved + 100

    code, out, _ = call_main(report.main, capsys, tmp_path / "my run" / "ü 1")
    assert code == 0 and "│ completed " in out

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the rerun runs from another directory, into one named alike
    code, out, err = call_main(rerun.main, capsys, run, "--verify", "hydra.run.dir=again/ü 2")
    assert code == 0, out + err
    assert "reproduced: " in out
    assert (elsewhere / "again" / "ü 2" / "summary.json").is_file()


def test_unquoted_non_ascii_paths_are_one_value(dlrun, tmp_path: Path) -> None:
    quick = ("task=sine-bp", "trainer.epochs=3", "trainer.plots=false", "trainer.progress=false")
    r = dlrun(*quick, "hydra.run.dir=ü1")
    assert r.code == 0, r.err
    assert (tmp_path / "ü1" / "summary.json").is_file()
    r = dlrun("resume=ü1", "trainer.epochs=5")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "ü1" / "summary.json").read_text())["epochs_completed"] == 5
    used = dlrun(*quick, "hydra.run.dir=ü1")
    assert used.code == 2 and "hydra.run.dir=" in used.err and "resume=" in used.err
