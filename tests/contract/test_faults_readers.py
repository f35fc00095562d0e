"""Readers that a small file cannot stall or crash: records nested 200,000 deep, a YAML alias
bomb, a FIFO where a record or a checkpoint should be. Each is one line naming the file, exit 2,
within seconds, and the run is left as it was (docs/faults.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.contract.test_faults_records import QUIET, snapshot

DEEP = "[" * 200_000 + "]" * 200_000
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("readers") / "run"
    r = run_cli(*QUIET, "trainer.epochs=3", f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert r.returncode == 0, r.stderr
    return run_dir


def _copy(pristine: Path, tmp_path: Path) -> Path:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(pristine, run_dir)
    return run_dir


def _one_line(r, prog: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stderr[-2000:])
    assert lines[0].startswith(f"{prog}: error: ") and "Traceback" not in r.stderr
    return lines[0]


def _commands(run_dir: Path) -> list[tuple[str, list[str]]]:
    return [
        ("dlrun", ["-m", "dlrun", f"resume={run_dir}", "trainer.epochs=6"]),
        ("dlrun-report", ["-m", "dlrun.sweeps.report", str(run_dir)]),
        ("dlrun-rerun", ["-m", "dlrun.commands.rerun", str(run_dir)]),
    ]


def _run(args: list[str], cwd: Path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "record, text",
    [
        ("summary.json", DEEP),
        ("env.json", '{"resumes": ' + DEEP + "}"),
        ("metrics.jsonl", DEEP + "\n"),
        (".hydra/hydra.yaml", BOMB),
        (".hydra/overrides.yaml", DEEP),
    ],
    ids=["deep summary", "deep env", "deep metrics", "yaml alias bomb", "deep yaml"],
)
def test_a_small_hostile_record_is_one_line(pristine, tmp_path, record: str, text: str) -> None:
    run_dir = _copy(pristine, tmp_path)
    (run_dir / record).write_text(text)
    before = snapshot(run_dir)
    for prog, args in _commands(run_dir):
        line = _one_line(_run(args, tmp_path), prog)
        assert record.split("/")[-1] in line and "damaged" in line, line
        assert snapshot(run_dir) == before


@pytest.mark.slow
def test_a_fifo_is_never_read(pristine, tmp_path: Path) -> None:
    run_dir = _copy(pristine, tmp_path)
    (run_dir / "metrics.jsonl").unlink()
    os.mkfifo(run_dir / "metrics.jsonl")
    for prog, args in _commands(run_dir):
        line = _one_line(_run(args, tmp_path), prog)
        assert "metrics.jsonl" in line and "not a regular file" in line, line
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    line = _one_line(_run(["-m", "dlrun", *QUIET, f"resume={fifo}"], tmp_path), "dlrun")
    assert "fifo.pt" in line and "not a regular file" in line
    line = _one_line(_run(["-m", "dlrun.commands.evaluate", str(fifo)], tmp_path), "dlrun-eval")
    assert "fifo.pt" in line
