"""A diverging run stops at once: exit 3, epoch and step named, last.pt the last finite state."""

from __future__ import annotations

import torch

DIVERGING = ("task=sine-bp", "optimizer.lr=1000", "trainer.plots=false", "trainer.log_every=1")


def weights(run_dir) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return state["epoch"], state["model"]


def test_a_nan_loss_stops_with_exit_3_and_keeps_the_last_finite_epoch(dlrun) -> None:
    # checkpoints every 10 epochs: epoch 6, the last finite one, and the best epoch are only in
    # memory when 7 fails
    r = dlrun(
        *DIVERGING, "trainer.epochs=20", "trainer.checkpoint_every=10", "trainer.validate_every=1"
    )
    assert r.code == 3, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: ")
    assert "is inf at epoch 7, step 1 of 1" in lines[0]
    assert "last.pt holds epoch 6" in lines[0] and "optimizer.lr=100" in lines[0]
    assert "Traceback" not in r.err + r.out

    summary = r.summary()
    assert summary["status"] == "failed" and summary["epochs_completed"] == 6
    assert "epoch 7" in summary["error"]
    assert max(row["epoch"] for row in r.metrics()) == 6  # nothing of the bad epoch recorded

    epoch, model = weights(r.run_dir)
    assert epoch == 6 and all(torch.isfinite(t).all() for t in model.values())
    # best.pt, kept in memory between checkpoints, is written too
    best = torch.load(r.run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == summary["best"]["epoch"] and best["epoch"] <= 6
    # exactly the state of a run that stops after epoch 6 on its own
    clean = dlrun(*DIVERGING, "trainer.epochs=6")
    assert clean.code == 0, clean.err
    _, reference = weights(clean.run_dir)
    assert all(torch.equal(model[k], reference[k]) for k in reference)


def test_a_nan_in_the_first_epoch_leaves_the_initial_weights(dlrun) -> None:
    r = dlrun("task=fizzbuzz", "optimizer.lr=1e30", "trainer.epochs=5", "trainer.plots=false")
    assert r.code == 3, r.err
    assert "is nan at epoch 1, step 2 of 8" in r.err
    epoch, model = weights(r.run_dir)
    assert epoch == 0 and all(torch.isfinite(t).all() for t in model.values())


def test_detect_anomaly_names_the_backward_function(dlrun) -> None:
    r = dlrun(
        "task=fizzbuzz",
        "optimizer.lr=1e30",
        "trainer.epochs=5",
        "trainer.plots=false",
        "trainer.detect_anomaly=true",
    )
    assert r.code == 3, r.err
    line = [ln for ln in r.err.splitlines() if ln.startswith("dlrun: error:")]
    assert len(line) == 1 and "LogSoftmaxBackward0" in line[0] and "epoch 1" in line[0]
    assert r.summary()["status"] == "failed"
