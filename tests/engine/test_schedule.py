"""The scheduler group and early stopping: the rates torch's schedulers give, in the metrics rows,
in every step kind, and a run stopped and resumed ending with exactly the uninterrupted weights."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from torch.optim import lr_scheduler

from dlrun.config.trainer import OneCycleSchedulerConfig, PlateauSchedulerConfig
from dlrun.engine import schedules as schedule

QUIET = ("trainer.plots=false", "trainer.progress=false")
FIZZ = ("trainer.log_every=1", "trainer.checkpoint_every=0", *QUIET)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["model"]


def _lrs(rows: list[dict]) -> list[float]:
    return [r["lr"] for r in rows if r["split"] == "train"]


def _interrupted(dlrun, run_dir: Path, args: tuple[str, ...], after_rows: int):
    """The run, stopped by a real SIGINT once metrics.jsonl has ``after_rows`` rows."""
    metrics, done = run_dir / "metrics.jsonl", threading.Event()

    def interrupt() -> None:
        deadline = time.time() + 120
        while not done.is_set() and time.time() < deadline:
            if metrics.exists() and metrics.read_text().count("\n") >= after_rows:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=interrupt, daemon=True)
    watcher.start()
    try:
        return dlrun(*args, run_dir=run_dir)
    finally:
        done.set()
        watcher.join()


FIZZ_160 = ("trainer.epochs=160", "trainer.validate_every=5")
RESUMED = [
    pytest.param(
        (*FIZZ_160, "scheduler=step", "scheduler.step_size=40", "scheduler.gamma=0.5"), id="step"
    ),
    pytest.param(
        (*FIZZ_160, "scheduler=multistep", "scheduler.milestones=[30,90]"), id="multistep"
    ),
    pytest.param((*FIZZ_160, "scheduler=exponential", "scheduler.gamma=0.99"), id="exponential"),
    pytest.param((*FIZZ_160, "scheduler=cosine", "scheduler.warmup_epochs=20"), id="cosine-warmup"),
    pytest.param((*FIZZ_160, "scheduler=onecycle", "scheduler.max_lr=0.3"), id="onecycle"),
    pytest.param(
        (*FIZZ_160, "scheduler=plateau", "scheduler.patience=1", "optimizer=adam"),
        id="plateau",
    ),
    pytest.param(  # sine-bp's mse stalls near epoch 260: the stop comes after the resume
        (
            "task=sine-bp",
            "trainer.epochs=400",
            "trainer.validate_every=10",
            "trainer.early_stopping.patience=2",
            "trainer.early_stopping.min_delta=0.5",
        ),
        id="early-stopping",
    ),
]


@pytest.mark.parametrize("args", RESUMED)
def test_a_stopped_and_resumed_run_ends_with_the_uninterrupted_weights(
    dlrun, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """FizzBuzz on the CPU, stopped by SIGINT part-way and resumed: bit for bit the same
    weights, rates and (early stopping) stopping epoch as a run that never stopped."""
    common = (*FIZZ, *args)
    straight = dlrun(*common)
    assert straight.code == 0, straight.err
    part = _interrupted(dlrun, tmp_path / "part", common, after_rows=40)
    assert part.code == 130, part.err
    stopped_at = part.summary()["epochs_completed"]
    assert 0 < stopped_at < straight.summary()["epochs_completed"]
    resumed = dlrun(f"resume={part.run_dir}")
    assert resumed.code == 0, resumed.err
    a, b = _weights(straight.run_dir), _weights(part.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows_a = [r for r in straight.metrics() if r["split"] == "train"]
    rows_b = [r for r in part.metrics() if r["split"] == "train"]
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    assert _lrs(rows_a) == _lrs(rows_b)
    s_a, s_b = straight.summary(), part.summary()
    assert s_b["status"] == "completed"
    assert s_a.get("stopped_early") == s_b.get("stopped_early")
    if "trainer.early_stopping.patience=2" in args:
        assert s_b["stopped_early"]["epoch"] == s_b["epochs_completed"] < 400
    elif "scheduler=plateau" not in args:
        assert len(set(_lrs(rows_a))) >= 3  # the rate really moved


def _torch_rates(make, epochs: int, lr: float) -> list[float]:
    """The oracle: torch's scheduler stepped once per epoch on an optimizer of its own."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize("kernel", ["true", "false"], ids=["mlp_kernel", "fused"])
def test_cosine_with_warmup_gives_torchs_rates_in_the_rows(dlrun, kernel: str) -> None:
    r = dlrun(
        "trainer.epochs=12",
        "scheduler=cosine",
        "scheduler.warmup_epochs=3",
        "scheduler.min_lr=0.001",
        f"trainer.mlp_kernel={kernel}",
        *FIZZ,
    )
    assert r.code == 0, r.err

    def make(opt):
        warm = lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
        cos = lr_scheduler.CosineAnnealingLR(opt, T_max=9, eta_min=0.001)
        return lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[3])

    assert _lrs(r.metrics()) == pytest.approx(_torch_rates(make, 12, 0.05), rel=1e-12)
    # a rate held for a whole epoch is what the step used: an SGD run with the rate of its
    # first epoch kept throughout ends elsewhere
    flat = dlrun("trainer.epochs=12", "optimizer.lr=0.005", f"trainer.mlp_kernel={kernel}", *FIZZ)
    assert not torch.equal(_weights(r.run_dir)["0.weight"], _weights(flat.run_dir)["0.weight"])


@pytest.mark.parametrize(
    "args",
    [
        ("trainer.fast=false",),
        ("optimizer=scratch_sgd",),
        ("optimizer=scratch_adam", "optimizer.lr=0.01"),
        ("task.impl=scratch",),
        ("trainer.cuda_graph=true",),
    ],
    ids=["eager", "scratch_sgd", "scratch_adam", "hand-gradients", "cuda_graph"],
)
def test_every_step_kind_trains_with_the_scheduled_rate(dlrun, args) -> None:
    """The same schedule through another step kind: the kernel's trajectory to rounding."""
    common = ("trainer.epochs=8", "scheduler=step", "scheduler.step_size=2", *FIZZ)
    other = dlrun(*common, *args)
    assert other.code == 0, other.err
    kind = dlrun(*common, *(a for a in args if a.startswith("optimizer")), "trainer.fast=false")
    assert kind.code == 0, kind.err
    assert _lrs(other.metrics()) == _lrs(kind.metrics())
    assert len(set(_lrs(other.metrics()))) == 4
    a, b = _weights(other.run_dir), _weights(kind.run_dir)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    if "trainer.cuda_graph=true" in args and not torch.cuda.is_available():
        assert "not captured" in (other.run_dir / "dlrun.log").read_text()


def test_onecycle_steps_after_every_update() -> None:
    """onecycle's total is epochs x updates: after them the rate is torch's final one."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    cfg = OneCycleSchedulerConfig(max_lr=1.0)
    s = schedule.build(cfg, opt, epochs=3, updates_per_epoch=4, maximize=False, objective="mse")
    assert s is not None
    stepped = s.stepping(lambda batch: torch.zeros(()))
    for _ in range(3 * 4 - 1):  # OneCycleLR counts its first rate as step 0
        stepped(None)
        s.epoch_end({"mse": 1.0})  # per-update schedules ignore the epoch's end
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0 / 25 / 1e4)


@pytest.mark.parametrize(
    ("maximize", "values"), [(True, [0.5, 0.6, 0.6, 0.6]), (False, [3, 2, 2, 2])]
)
def test_plateau_reduces_in_the_tasks_direction(maximize: bool, values: list[float]) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = PlateauSchedulerConfig(patience=1, factor=0.5)
    s = schedule.build(cfg, opt, 10, 1, maximize=maximize, objective="m")
    assert s is not None
    rates = []
    for v in values:
        s.epoch_end(None)  # an epoch without validation changes nothing
        s.epoch_end({"m": v})
        rates.append(opt.param_groups[0]["lr"])
    assert rates == [1.0, 1.0, 1.0, 0.5]  # two validations without improvement, patience 1


def test_early_stopping_ends_completed_with_its_record(dlrun) -> None:
    r = dlrun(
        "task=sine-bp",
        "trainer.epochs=4000",
        "trainer.validate_every=10",
        "trainer.early_stopping.patience=3",
        "trainer.early_stopping.min_delta=0.05",
        *QUIET,
    )
    assert r.code == 0, r.err
    s = r.summary()
    stop = s["stopped_early"]
    assert s["status"] == "completed" and s["epochs_completed"] == stop["epoch"] < 4000
    vals = [m for m in r.metrics() if m["split"] == "val"]
    assert vals[-1]["epoch"] == stop["epoch"]
    # the rule, read off the recorded validations: the last improvement by more than 0.05,
    # then 3 validations without one
    best, waited, stopped = vals[0], 0, None
    for m in vals[1:]:
        if best["mse"] - m["mse"] > 0.05:
            best, waited = m, 0
        else:
            waited += 1
            if waited == 3:
                stopped = m["epoch"]
                break
    assert stop["epoch"] == stopped and stop["best_epoch"] == best["epoch"]
    assert stop["monitor"] == "mse" and stop["best"] == best["mse"]
    assert (
        torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["epoch"] == stop["epoch"]
    )
    state = torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["early_stopping"]
    assert state["waited"] == 3


def test_the_curves_plot_shows_a_scheduled_rate() -> None:
    from dlrun import plots

    rows = [{"epoch": e, "split": "train", "loss": 1.0 / e, "lr": 0.1 / e} for e in range(1, 5)]
    rows += [{"epoch": 4, "split": "val", "loss": 0.2, "accuracy": 0.5}]
    axes = plots.curves(rows, "accuracy").axes
    assert [ax.get_title() for ax in axes] == ["loss", "validation accuracy", "learning rate"]
    assert list(axes[2].lines[0].get_ydata()) == [0.1, 0.05, 0.1 / 3, 0.025]
    flat = [{**r, "lr": 0.1} if r["split"] == "train" else r for r in rows]
    assert len(plots.curves(flat, "accuracy").axes) == 2  # a constant rate: no panel
