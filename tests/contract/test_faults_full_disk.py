"""A resume refused on a really full disk (a small tmpfs) leaves the run as it was: no
`.hydra/resume-*` record, empty or whole, so the run still reports, reruns and resumes once
there is space again (docs/faults.md). Mounting needs root: the tests skip without it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dlrun.cli import main as cli
from dlrun.errors import DlrunError
from dlrun.sweeps import report
from tests.conftest import call_main, run_cli
from tests.contract.test_disk_faults import QUIET, fill, one_line, small_disk, status


def test_a_resume_refused_on_a_full_disk_leaves_the_run_whole(
    dlrun, tmp_path: Path, capsys
) -> None:
    with small_disk(tmp_path / "disk", "2600k") as disk:
        first = dlrun("task=sine-bp", *QUIET, "trainer.epochs=20", run_dir=disk / "run")
        assert first.code == 0, first.err
        hydra = first.run_dir / ".hydra"
        before = sorted(p.name for p in hydra.iterdir())
        for leave in (0, 64 << 10):  # no byte left; room for the records, not for the probe
            filler = fill(disk, leave)
            r = dlrun(f"resume={first.run_dir}", "trainer.epochs=40")
            assert r.code == 2
            assert "No space left on device" in one_line(r.err)
            assert sorted(p.name for p in hydra.iterdir()) == before  # no resume-* record
            assert status(first.run_dir) == "completed"
            filler.unlink()
        code, out, err = call_main(report.main, capsys, first.run_dir)
        assert code == 0 and "│ completed " in out, err
        again = dlrun(f"resume={first.run_dir}", "trainer.epochs=30")
        assert again.code == 0, again.err
        assert status(first.run_dir) == "completed"


def test_a_run_or_sweep_refused_on_a_full_disk_names_it_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk, 0)
        for args, where in (
            (["task=sine-bp", f"hydra.run.dir={disk}/run"], disk / "run"),
            (["-m", "task=sine-bp", "seed=1,2", f"hydra.sweep.dir={disk}/sw"], disk / "sw"),
        ):
            r = run_cli(*args, cwd=tmp_path)
            assert r.returncode == 2
            line = one_line(r.stderr)  # no warnings of Hydra's around it
            assert "No space left on device" in line
            assert f"free some space on the disk of {where}" in line
            assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no lock, no record


def test_a_log_that_cannot_be_flushed_never_hides_the_error(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "64k") as disk:
        fill(disk, 0)
        root = logging.getLogger()
        with pytest.raises(DlrunError, match="the error that stopped the run"):
            with cli.logging_restored():
                handler = logging.FileHandler(disk / "dlrun.log")
                root.addHandler(handler)
                handler.stream.write("x" * 3000)  # buffered: its flush on close fails
                raise DlrunError("the error that stopped the run")
        assert handler not in root.handlers
