"""dlrun-rerun: a real run executed again from its record reproduces; a changed one does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dlrun.commands import rerun
from tests.conftest import call_main

SHORT = (
    "task=sine-bp",
    "optimizer.lr=0.2",
    "seed=3",
    "trainer.epochs=12",
    "trainer.validate_every=3",
    "trainer.log_every=1",
    "trainer.plots=false",
    "trainer.progress=false",
)


def _rerun(capsys, *args: object) -> tuple[int, str, str]:
    return call_main(rerun.main, capsys, *args)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rerun_reproduces_exactly_into_a_new_directory(dlrun, tmp_path: Path, capsys) -> None:
    source = dlrun(*SHORT, "device=cpu").run_dir
    before = _snapshot(source)
    code, out, err = _rerun(capsys, source, "--verify")
    assert code == 0, out + err
    assert "reproduced: 16 rows of metrics.jsonl match exactly on cpu" in out
    assert _snapshot(source) == before  # the source run is only read

    (new,) = (tmp_path / "outputs").glob("*/*")  # dlrun's own layout: outputs/<date>/<time>
    config = OmegaConf.load(new / ".hydra" / "config.yaml")
    assert (config.optimizer.lr, config.seed, config.trainer.epochs) == (0.2, 3, 12)
    a, b = _rows(source / "metrics.jsonl"), _rows(new / "metrics.jsonl")
    assert len(a) == 16  # 12 train rows, 4 val rows
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in a] == [
        {k: v for k, v in r.items() if k != "time_s"} for r in b
    ]
    summary = json.loads((new / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["device"] == "cpu"


def test_an_extra_override_changes_the_rerun_and_verify_says_so(dlrun, tmp_path, capsys) -> None:
    source = dlrun(*SHORT).run_dir
    new = tmp_path / "lr01"
    code, out, err = _rerun(capsys, source, "--verify", "optimizer.lr=0.1", f"hydra.run.dir={new}")
    assert code == 1
    assert "NOT reproduced" in out  # the first difference: the rate of epoch 1's train row
    assert "line 1 (epoch 1, train): lr 0.2 in the source, 0.1 in the rerun" in out
    assert OmegaConf.load(new / ".hydra" / "config.yaml").optimizer.lr == 0.1


def test_tampered_source_metrics_fail_verify(dlrun, tmp_path: Path, capsys) -> None:
    source = dlrun(*SHORT, "device=cpu").run_dir  # exact reproduction: the CPU's promise
    rows = _rows(source / "metrics.jsonl")
    row = next(i for i, r in enumerate(rows) if r["split"] == "val" and r["epoch"] == 9)
    rows[row]["mse"] *= 1 + 1e-6  # a change far below what the console shows
    (source / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = _rerun(capsys, source, "--verify", f"hydra.run.dir={tmp_path / 'again'}")
    assert code == 1
    line = next(ln for ln in out.splitlines() if "NOT reproduced" in ln)
    assert f"line {row + 1} (epoch 9, val): mse {rows[row]['mse']!r} in the source" in line
    assert "more difference" not in line  # only the tampered value differs


def test_a_resumed_run_reruns_in_one_go(dlrun, tmp_path: Path, capsys) -> None:
    first = dlrun(*SHORT, "trainer.epochs=6", "trainer.checkpoint_every=1")
    resumed = dlrun(f"resume={first.run_dir}", "trainer.epochs=12")
    assert resumed.code == 0, resumed.err
    code, out, err = _rerun(capsys, first.run_dir, "--verify", f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 0, out + err
    assert "resumed 1 time(s)" in out and "reproduced" in out
    assert OmegaConf.load(tmp_path / "r" / ".hydra" / "config.yaml").resume is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing",), "no such run directory: missing"),
        ((".",), "is not a run directory"),
        (("run", "--rtol=-1"), "--rtol=-1.0: expected a finite number >= 0"),
        (("run", "--verify", "hydra.run.dir=run"), "only a completed run can be verified"),
        (("run", "hydra.run.dir=run"), "already exists: a rerun writes a new run directory"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, monkeypatch, capsys, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "run" / "summary.json").write_text('{"status": "interrupted"}')
    code, out, err = _rerun(capsys, *args)
    assert code == 2
    assert err.startswith("dlrun-rerun: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rerun_on_cuda_within_tolerance(dlrun, tmp_path: Path, capsys) -> None:
    source = dlrun(*SHORT, "device=cuda").run_dir
    code, out, err = _rerun(capsys, source, "--verify", f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 0, out + err
    assert "within relative tolerance 0.0001 on cuda" in out


def test_a_resumed_run_verifies_on_the_rows_both_runs_log(dlrun, tmp_path, monkeypatch, capsys):
    """50 epochs, then resumed to 60, logged every 40: the source logs epoch 50 (where its
    first part ended), a run in one go does not; the rows both log match exactly. From another
    directory, with the source given relative to it, so the recorded `resume=` cannot be
    replayed."""
    first = dlrun(  # rows that match exactly: the CPU's promise (docs/resume.md)
        "task=sine-bp",
        "trainer.epochs=50",
        "trainer.validate_every=40",
        "trainer.log_every=40",
        "trainer.plots=false",
        "device=cpu",
        run_dir=tmp_path / "s",
    )
    assert first.code == 0, first.err
    resumed = dlrun("resume=s", "trainer.epochs=60")
    assert resumed.code == 0, resumed.err
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    code, out, err = _rerun(capsys, "../s", "--verify", "hydra.run.dir=r")
    assert code == 0, out + err
    assert "reproduced: 4 rows of metrics.jsonl match exactly" in out  # epochs 40 and 60
    assert "2 row(s) logged by one run only" in out  # epoch 50
    rows = _rows(tmp_path / "other" / "r" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [40, 40, 60, 60]


def test_verify_reads_a_damaged_source_before_any_work(dlrun, tmp_path, capsys) -> None:
    source = dlrun(*SHORT).run_dir
    text = (source / "metrics.jsonl").read_text()
    (source / "metrics.jsonl").write_text("[1, 2]\n" + text)  # JSON, not a row
    code, out, err = _rerun(capsys, source, "--verify", f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 2 and "line 1 is not a metrics row" in err
    assert not (tmp_path / "r").exists()  # refused before the rerun ran
