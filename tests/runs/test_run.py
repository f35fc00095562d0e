"""The run directory contract, determinism and resume."""

from __future__ import annotations

import json

import pytest
import torch

from dlrun.engine.device import describe, resolve
from dlrun.rundir.lock import NAME as LOCK
from dlrun.rundir.summary import shortest

AUTO = describe(resolve("auto"))  # device=auto, the default: the GPU on a machine with one

SHORT = (
    "trainer.epochs=6",
    "trainer.validate_every=2",
    "trainer.log_every=1",
    "trainer.checkpoint_every=1",
    "trainer.plots=false",
)


def test_run_directory_contract(dlrun) -> None:
    r = dlrun("trainer.epochs=4", "trainer.validate_every=2", "trainer.log_every=1")
    assert r.code == 0, r.err
    d = r.run_dir
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "dlrun.log",
        "metrics.jsonl",
        "summary.json",
        "env.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "plots/curves.png",
        "plots/fizzbuzz.png",
    ):
        assert (d / name).is_file(), name
    for png in (d / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

    rows = r.metrics()
    assert [(m["epoch"], m["split"]) for m in rows] == [
        (1, "train"),
        (2, "train"),
        (2, "val"),
        (3, "train"),
        (4, "train"),
        (4, "val"),
    ]
    for m in rows:
        assert isinstance(m["epoch"], int) and m["split"] in ("train", "val")
        assert isinstance(m["loss"], float) and m["time_s"] >= 0
        if m["split"] == "val":
            assert 0 <= m["accuracy"] <= 1 and isinstance(m["correct"], int)

    s = r.summary()
    assert s["task"] == "fizzbuzz" and s["status"] == "completed"
    assert s["epochs_completed"] == 4 and s["seed"] == 0 and s["device"] == AUTO
    assert s["final"]["epoch"] == 4 and s["final"]["accuracy"] == shortest(rows[-1]["accuracy"])
    assert s["objective"] == s["final"]["accuracy"]
    assert s["best"]["accuracy"] == shortest(
        max(m["accuracy"] for m in rows if m["split"] == "val")
    )
    assert s["wall_s"] > 0

    env = json.loads((d / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["python"]
    assert env["packages"]["hydra-core"] and env["device"] == AUTO
    assert "trainer.epochs=4" in env["command"]

    ckpt = torch.load(d / "checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == 4 and ckpt["task"] == "fizzbuzz"
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python", "loop"}
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 0.05
    assert ckpt["config"]["trainer"]["epochs"] == 4
    assert "resumed" not in (d / "dlrun.log").read_text()
    assert "epoch 4/4" in (d / "dlrun.log").read_text()


def _values(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "time_s"} for m in rows]


@pytest.mark.parametrize("task", ["fizzbuzz", "sine-bp"])
def test_same_seed_same_metrics(dlrun, task: str) -> None:
    a = dlrun(f"task={task}", *SHORT, "seed=7")
    b = dlrun(f"task={task}", *SHORT, "seed=7")
    c = dlrun(f"task={task}", *SHORT, "seed=8")
    assert a.code == b.code == c.code == 0
    assert _values(a.metrics()) == _values(b.metrics())
    assert _values(a.metrics()) != _values(c.metrics())


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_resume_matches_an_uninterrupted_run(dlrun, optimizer: str) -> None:
    """Shuffled batches and optimizer state both continue exactly where they stopped."""
    full = dlrun(f"optimizer={optimizer}", *SHORT)
    part = dlrun(f"optimizer={optimizer}", *SHORT[1:], "trainer.epochs=3")
    assert full.code == part.code == 0
    resumed = dlrun(f"resume={part.run_dir}", "trainer.epochs=6")
    assert resumed.code == 0, resumed.err
    assert resumed.run_dir == part.run_dir  # same directory, appended
    a = torch.load(full.run_dir / "checkpoints/last.pt", weights_only=True)
    b = torch.load(part.run_dir / "checkpoints/last.pt", weights_only=True)
    assert b["epoch"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    # the same rows, plus the validation that closed the first part at epoch 3
    extra = [m for m in part.metrics() if (m["epoch"], m["split"]) == (3, "val")]
    assert len(extra) == 1
    assert _values(full.metrics()) == _values([m for m in part.metrics() if m not in extra])
    s = part.summary()
    assert s["status"] == "completed" and s["epochs_completed"] == 6
    assert s["resumes"][0]["epoch"] == 3
    assert f"resumed from {part.run_dir}" in (part.run_dir / "dlrun.log").read_text()
    assert (part.run_dir / ".hydra/overrides.yaml").read_text().count("epochs=3") == 1


def test_resume_keeps_the_original_overrides(dlrun) -> None:
    first = dlrun("task=sine-bp", "optimizer.lr=0.2", "trainer.epochs=2", "trainer.plots=false")
    again = dlrun(f"resume={first.run_dir}", "trainer.epochs=4")
    assert again.code == 0, again.err
    ckpt = torch.load(first.run_dir / "checkpoints/last.pt", weights_only=True)
    assert ckpt["task"] == "sine-bp" and ckpt["epoch"] == 4
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 0.2


def test_resume_from_a_checkpoint_file_with_new_settings(dlrun) -> None:
    first = dlrun(*SHORT[1:], "trainer.epochs=2")
    ckpt = first.run_dir / "checkpoints" / "last.pt"
    before = {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()}
    later = dlrun(f"resume={ckpt}", "trainer.epochs=3", "optimizer.lr=0.01")
    assert later.code == 0, later.err
    assert later.run_dir != first.run_dir  # a .pt file starts a new run ...
    after = {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()}
    assert after == before  # ... and leaves the one it came from alone
    state = torch.load(later.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 3
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.01  # the new setting wins
    assert [m["epoch"] for m in later.metrics() if m["split"] == "train"] == [3]


def test_resume_refuses_fewer_epochs_than_the_checkpoint_has(dlrun) -> None:
    first = dlrun(*SHORT[1:], "trainer.epochs=4")
    again = dlrun(f"resume={first.run_dir}", "trainer.epochs=2")
    assert again.code == 2 and "trainer.epochs=2" in again.err and "epoch 4" in again.err
    assert first.summary()["epochs"] == 4


def test_refused_resumes_change_nothing_on_disk(dlrun, tmp_path) -> None:
    first = dlrun(*SHORT[1:], "trainer.epochs=2")
    d = first.run_dir
    # the log gets a line; the lock file names each (refused) writer in turn
    untouched = ("dlrun.log", LOCK)
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name not in untouched}

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((d / "checkpoints/last.pt").read_bytes()[:300])
    cases = {
        f"resume={tmp_path / 'missing'}": "no such file or directory",
        f"resume={junk}": "truncated or not a checkpoint",
        f"resume={truncated}": "truncated or not a checkpoint",
    }
    for arg, message in cases.items():
        r = dlrun(arg, "trainer.plots=false")
        assert r.code == 2 and message in r.err, (arg, r.err)
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err

    other = dlrun(f"resume={d}", "task=sine-bp")
    assert other.code == 2 and "is from task fizzbuzz" in other.err
    shape = dlrun(f"resume={d}", "task.hidden=50")
    assert shape.code == 2 and "model differs" in shape.err and "0.weight" in shape.err
    after = {p: p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name not in untouched}
    assert after == before


def test_zero_epochs_scores_the_model_and_leaves_a_checkpoint(dlrun) -> None:
    r = dlrun("task=sine-bp", "trainer.epochs=0", "trainer.plots=false")
    assert r.code == 0, r.err
    assert [(m["epoch"], m["split"]) for m in r.metrics()] == [(0, "val")]
    assert r.summary()["final"]["mse"] > 10  # untrained
    more = dlrun(f"resume={r.run_dir}", "trainer.epochs=2")
    assert more.code == 0, more.err
    assert torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["epoch"] == 2
