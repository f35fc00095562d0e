"""What a person reads while runs go: quiet when asked, a bounded number of lines whatever
trainer.log_every, a sweep's header once and a line per job, runs named alike everywhere (the
console, summary.json, dlrun-report)."""

from __future__ import annotations

import re
from pathlib import Path

from dlrun import api
from dlrun.rundir.layout import RunDir
from dlrun.rundir.summary import run_name
from dlrun.runs.console import PLAIN_EPOCHS
from dlrun.sweeps import report

EPOCH_LINE = re.compile(r"^epoch +\d+/\d+ ", re.M)
LOGGED = re.compile(r" - epoch +\d+/\d+ ")  # dlrun.log's lines


def test_a_name_is_the_task_and_the_overrides_that_set_it_apart() -> None:
    typed = ["optimizer.lr=0.1", "seed=1", "device=cpu", "trainer.plots=false", "hydra.run.dir=x"]
    assert run_name("sine-bp", ["task=sine-bp", *typed]) == "sine-bp lr=0.1 seed=1"
    # a sweep's job: only what the sweep varies
    sweep = ["task=sine-bp", "trainer.epochs=5", "optimizer.lr=0.1,0.3", "seed=0,1"]
    job = ["task=sine-bp", "trainer.epochs=5", "optimizer.lr=0.3", "seed=1"]
    assert run_name("sine-bp", job, sweep) == "sine-bp lr=0.3 seed=1"
    # a key's last part, unless two keys share it
    both = ["trainer.grad_clip.value=1", "task.value=2", "+debug=fast"]
    assert run_name("t", both) == "t trainer.grad_clip.value=1 task.value=2 debug=fast"
    assert run_name("fizzbuzz", []) == "fizzbuzz"
    # a sampled float reads short; what was typed short stays as typed
    assert run_name("t", ["optimizer.lr=0.021880611398582378", "wd=1e-3"]) == "t lr=0.02188 wd=1e-3"


def test_progress_false_shows_only_the_header_and_the_closing_table(dlrun) -> None:
    r = dlrun("task=sine-bp", "trainer.epochs=50", "trainer.log_every=1", "trainer.progress=false")
    assert r.code == 0, r.err
    assert not EPOCH_LINE.search(r.out), r.out
    assert "run: sine-bp epochs=50 log_every=1" in r.out and "metric" in r.out
    assert len(LOGGED.findall(RunDir(r.run_dir).log.read_text())) == 100  # 50 train, 50 val


def test_plain_lines_are_bounded_whatever_log_every(dlrun) -> None:
    args = ("task=sine-bp", "trainer.log_every=1", "trainer.validate_every=1", "device=cpu")
    r = dlrun(*args, "trainer.epochs=1000")
    assert r.code == 0, r.err
    shown = EPOCH_LINE.findall(r.out)
    # not a terminal: about PLAIN_EPOCHS epochs (train and val lines each), the last included
    assert 2 * PLAIN_EPOCHS <= len(shown) <= 2 * (PLAIN_EPOCHS + 1), len(shown)
    assert "epoch 1000/1000 val" in r.out
    assert len(LOGGED.findall(RunDir(r.run_dir).log.read_text())) == 2000
    short = dlrun(*args, "trainer.epochs=7")  # a short run shows every epoch
    assert len(EPOCH_LINE.findall(short.out)) == 14


def test_a_sweep_shows_its_header_once_and_a_line_per_job(tmp_path: Path, capsys) -> None:
    jobs = api.sweep(
        "task=sine-bp",
        "trainer.epochs=30",
        "trainer.log_every=1",
        "optimizer.lr=0.1,0.2,0.3",
        "trainer.plots=false",
        "device=cpu",
        sweep_dir=tmp_path / "sweep",
    )
    out = capsys.readouterr().out
    assert out.count("model: Sequential") == 1 and out.count("settings") == 1
    assert not EPOCH_LINE.search(out) and "metric" not in out  # no closing table per job
    names = [job.summary.name for job in jobs]
    assert names == ["sine-bp lr=0.1", "sine-bp lr=0.2", "sine-bp lr=0.3"]
    for i, name in enumerate(names):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"job {i}: "))
        assert f"job {i}: {name}: completed, 30 epochs" in line and "mse" in line
    report.main([str(tmp_path / "sweep"), "--csv", str(tmp_path / "r.csv")])
    table = capsys.readouterr().out
    assert all(f"{i}: {name}" in table for i, name in enumerate(names))  # the report's job column
    assert "sine-bp lr=0.2" in (tmp_path / "r.csv").read_text()
