"""Records of a run that are valid JSON of the wrong shape, or built to stall a reader: each is
one line naming the file, exit 2, and the run is left exactly as it was (docs/faults.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUIET = ("task=sine-bp", "trainer.plots=false", "trainer.progress=false")


@pytest.fixture
def completed(dlrun, tmp_path: Path) -> Path:
    r = dlrun(*QUIET, "trainer.epochs=10", run_dir=tmp_path / "done")
    assert r.code == 0, r.err
    return r.run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in ("dlrun.log", ".dlrun.lock")
    }


def one_line(err: str, prog: str = "dlrun") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


@pytest.mark.parametrize("resumes", [5, "x", {"a": 1}, [1, 2]])
def test_env_json_resumes_of_another_shape_changes_nothing(dlrun, completed, resumes) -> None:
    env = json.loads((completed / "env.json").read_text())
    env["resumes"] = resumes
    (completed / "env.json").write_text(json.dumps(env))
    before = snapshot(completed)
    r = dlrun(f"resume={completed}", "trainer.epochs=20")
    assert r.code == 2
    line = one_line(r.err)
    assert "env.json" in line and "damaged" in line and "internal error" not in line
    assert snapshot(completed) == before  # still `completed`, no resume record


@pytest.mark.parametrize(
    "key, value",
    [("resumes", 5), ("resumes", [1]), ("wall_s", "x"), ("overrides", 5), ("best", 5)],
)
def test_summary_json_of_another_shape_changes_nothing(dlrun, completed, key, value) -> None:
    summary = json.loads((completed / "summary.json").read_text())
    summary[key] = value
    (completed / "summary.json").write_text(json.dumps(summary))
    before = snapshot(completed)
    r = dlrun(f"resume={completed}", "trainer.epochs=20")
    assert r.code == 2, r.err
    line = one_line(r.err)
    assert "summary.json" in line and "damaged" in line and "internal error" not in line
    assert snapshot(completed) == before
