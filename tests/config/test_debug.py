"""Debug presets (`+debug=fast/overfit/profile`) and the trainer keys behind them: an epoch cut
to its first batches, the same batches every epoch, a profiler trace."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from dlrun import tasks
from dlrun.config import schema
from dlrun.config.trainer import TrainerConfig
from dlrun.engine import loop
from dlrun.engine.training import Training
from dlrun.rundir.layout import RunDir
from dlrun.runs.setup import seed_everything
from dlrun.tasks.fizzbuzz import FizzBuzzConfig
from tests.tasks.test_scratch_tasks import Collect

CPU = torch.device("cpu")
QUIET = ("trainer.progress=false", "device=cpu")


def fizzbuzz(**trainer: object) -> tuple:
    seed_everything(0)
    task = tasks.create(FizzBuzzConfig(hidden=16), schema.DataConfig(), CPU)
    config = TrainerConfig(**{"checkpoint_every": 0, "fast": False, **trainer})
    return task, task.build_model(), config


def textbook(task, model, order_of_epoch, epochs: int, bs: int, batches: int, lr: float) -> None:
    """The oracle: plain SGD over the first ``batches`` batches of each epoch's order."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = task.train_data
    for epoch in range(epochs):
        order = order_of_epoch(epoch)
        for b in range(batches):
            idx = order[b * bs : (b + 1) * bs]
            optimizer.zero_grad()
            task.loss(model, (x[idx], y[idx])).backward()
            optimizer.step()


@pytest.mark.parametrize("fast", [False, True])
def test_limit_batches_trains_each_epoch_on_its_first_batches(fast: bool) -> None:
    task, model, trainer = fizzbuzz(epochs=3, batch_size=32, limit_batches=2, fast=fast)
    trainer.mlp_kernel = False
    oracle = copy.deepcopy(model)
    hooks = Collect()
    sgd = torch.optim.SGD(model.parameters(), lr=0.05)
    loop.fit(Training(CPU, task, model, sgd, torch.Generator().manual_seed(5), trainer), hooks)

    draws = torch.Generator().manual_seed(5)
    orders = [torch.randperm(len(task.train_data[0]), generator=draws) for _ in range(3)]
    textbook(task, oracle, orders.__getitem__, epochs=3, bs=32, batches=2, lr=0.05)
    for (name, a), b in zip(model.state_dict().items(), oracle.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert len(hooks.train) == 3
    # a full epoch moves the weights further than its first two batches do
    task2, full, trainer2 = fizzbuzz(epochs=3, batch_size=32, fast=fast)
    sgd = torch.optim.SGD(full.parameters(), lr=0.05)
    loop.fit(Training(CPU, task2, full, sgd, torch.Generator().manual_seed(5), trainer2), Collect())
    assert not torch.equal(full.state_dict()["0.weight"], model.state_dict()["0.weight"])


def test_overfit_batches_takes_the_same_first_batch_every_epoch() -> None:
    task, model, trainer = fizzbuzz(epochs=4, batch_size=32, overfit_batches=1, shuffle=True)
    oracle = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    sgd = torch.optim.SGD(model.parameters(), lr=0.05)
    loop.fit(Training(CPU, task, model, sgd, generator, trainer), Collect())
    n = len(task.train_data[0])
    textbook(task, oracle, lambda _: torch.arange(n), epochs=4, bs=32, batches=1, lr=0.05)
    for a, b in zip(model.state_dict().values(), oracle.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.equal(generator.get_state(), state)  # nothing shuffled


def test_debug_fast_checks_a_whole_config_in_two_short_epochs(dlrun) -> None:
    r = dlrun("+debug=fast", "task=fizzbuzz", *QUIET)
    assert r.code == 0, r.err
    run = RunDir(r.run_dir)
    assert [row["epoch"] for row in run.read_metrics() if row["split"] == "train"] == [1, 2]
    assert run.read_summary().status == "completed"
    assert run.last.is_file() and not run.plots.exists()
    assert r.summary()["epochs"] == 2


def test_debug_overfit_drives_the_loss_of_one_batch_near_zero(dlrun) -> None:
    r = dlrun("+debug=overfit", "task=fizzbuzz", "optimizer=adam", "optimizer.lr=0.01", *QUIET)
    assert r.code == 0, r.err
    train = [row["loss"] for row in r.metrics() if row["split"] == "train"]
    assert train[0] > 0.5  # cross-entropy over 4 classes starts near log 4
    assert train[-1] < 0.01, train[-1]


def test_debug_profile_writes_a_trace_and_shows_the_costliest_ops(dlrun) -> None:
    r = dlrun("+debug=profile", "task=fizzbuzz", "trainer.mlp_kernel=false", *QUIET)
    assert r.code == 0, r.err
    trace = RunDir(r.run_dir).profile_trace
    events = json.loads(trace.read_text())["traceEvents"]
    steps = {e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}
    assert len(steps) == 5, steps  # the five steps after warm-up
    assert any(e.get("name") == "aten::addmm" for e in events)  # the Linear layers ran in it
    assert "profile: 5 train steps" in r.out and "aten::" in r.out and str(trace) in r.out


def test_a_run_too_short_to_profile_says_so(dlrun) -> None:
    r = dlrun("task=sine-bp", "trainer.epochs=1", "trainer.profile_steps=3", *QUIET)
    assert r.code == 0, r.err
    assert "profile: nothing recorded" in r.out
    assert not RunDir(r.run_dir).profile_trace.exists()


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["+debug=nope"], ["debug/nope", "available: fast, overfit, profile"]),
        (["trainer.limit_batches=0"], ["trainer.limit_batches=0", "null for every batch"]),
        (["trainer.overfit_batches=-1"], ["trainer.overfit_batches=-1", ">= 0"]),
    ],
)
def test_bad_debug_settings_are_one_line(dlrun, args: list[str], names: list[str]) -> None:
    r = dlrun(*args, *QUIET)
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("dlrun: error: ")
    for name in names:
        assert name in r.err, r.err
