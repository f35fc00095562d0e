"""A resume refused on a really full disk (a small tmpfs) leaves the run as it was: no
`.hydra/resume-*` record, empty or whole, so the run still reports, reruns and resumes once
there is space again (docs/faults.md). Mounting needs root: the tests skip without it."""

from __future__ import annotations

from pathlib import Path

from dlrun import report
from tests.conftest import call_main
from tests.test_disk_faults import QUIET, fill, one_line, small_disk, status


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
