"""Gradient clipping on every step kind against the textbook ``loss.backward();
clip_grad_norm_(...); step()``, the norms in the train rows, and gradient accumulation against
one big batch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlrun.config.optimizers import AdamConfig, ScratchSGDConfig, SGDConfig
from dlrun.config.trainer import GradClipConfig, TrainerConfig
from dlrun.engine import optimizers as optim
from dlrun.engine import steps
from dlrun.tasks.base import Task, classification_loss, half_mse_loss

QUIET = ("trainer.plots=false", "trainer.progress=false")


class _MLP(Task):
    """A small MLP with a shared criterion: the MLP kernel, the fused and the eager step all
    apply to it."""

    name = "mlp"
    objective = "loss"
    maximize = False
    criterion = "cross_entropy"

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))

    def evaluate(self, model):
        return {"loss": self.loss(model, self.train_data)}


def _task(dtype: torch.dtype = torch.float32, n: int = 40) -> _MLP:
    torch.manual_seed(0)
    task = _MLP(None, None, torch.device("cpu"))  # type: ignore[arg-type]
    task.train_data = (torch.randn(n, 5, dtype=dtype) * 3, torch.randint(0, 3, (n,)))
    return task


CLIPS = [
    pytest.param({"max_norm": 0.5}, id="max_norm"),
    pytest.param({"value": 0.05}, id="value"),
    pytest.param({"max_norm": 0.5, "value": 0.05}, id="both"),
]
KINDS = [  # trainer settings -> how close to the textbook step (0: bit for bit)
    pytest.param({"fast": False}, 0.0, id="eager"),
    pytest.param({"mlp_kernel": False}, 0.0, id="fused"),
    pytest.param({}, 1e-5, id="mlp_kernel"),
]
OPTIMIZERS = [
    pytest.param(SGDConfig(lr=0.5), id="sgd"),
    pytest.param(AdamConfig(lr=0.05), id="adam"),
    pytest.param(ScratchSGDConfig(lr=0.5), id="scratch_sgd"),
]


@pytest.mark.parametrize("opt_cfg", OPTIMIZERS)
@pytest.mark.parametrize(("kind", "rtol"), KINDS)
@pytest.mark.parametrize("clip", CLIPS)
def test_clipping_is_the_textbook_clip_on_every_step_kind(clip, kind, rtol, opt_cfg) -> None:
    task = _task()
    models = [task.build_model() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [optim.build(opt_cfg, m.parameters(), fused=True) for m in models]
    trainer = TrainerConfig(grad_clip=GradClipConfig(**clip), **kind)
    step = steps.build(task, models[0], opts[0], trainer)
    for i in range(5):
        batch = tuple(t[i * 8 : i * 8 + 8] for t in task.train_data)
        loss, norm = step(batch).tolist()
        # the textbook step
        opts[1].zero_grad(set_to_none=True)
        theirs = classification_loss(models[1], batch)
        theirs.backward()
        params = list(models[1].parameters())
        if "max_norm" in clip:
            total = torch.nn.utils.clip_grad_norm_(params, clip["max_norm"])
        else:
            total = torch.nn.utils.get_total_norm([p.grad for p in params])
        if "value" in clip:
            torch.nn.utils.clip_grad_value_(params, clip["value"])
        opts[1].step()
        assert loss == pytest.approx(theirs.item(), rel=rtol, abs=1e-7)
        assert norm == pytest.approx(total.item(), rel=max(rtol, 1e-7))
        assert total.item() > clip.get("max_norm", 0)  # clipping really changed something
    theirs = models[1].state_dict()
    for k, a in models[0].state_dict().items():
        if rtol == 0:
            assert torch.equal(a, theirs[k]), k
        else:
            torch.testing.assert_close(a, theirs[k], rtol=rtol, atol=1e-6)


def test_train_rows_hold_the_epochs_mean_and_largest_gradient_norm(dlrun) -> None:
    """FizzBuzz (the MLP kernel): the norms of every step, from the fused step's own record."""
    args = ("trainer.epochs=3", "trainer.grad_clip.max_norm=0.1", "trainer.log_every=1", *QUIET)
    r = dlrun(*args)
    assert r.code == 0, r.err
    rows = [m for m in r.metrics() if m["split"] == "train"]
    assert all(0 < m["grad_norm"] <= m["grad_norm_max"] for m in rows)
    assert rows[0]["grad_norm_max"] > 0.1  # norms before clipping, not after
    fused = dlrun(*args, "trainer.mlp_kernel=false")
    for a, b in zip(rows, [m for m in fused.metrics() if m["split"] == "train"], strict=True):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["grad_norm_max"] == pytest.approx(b["grad_norm_max"], rel=1e-4)
    plain = dlrun("trainer.epochs=3", *QUIET)  # clipping off: no norm is computed at all
    assert "grad_norm" not in plain.metrics()[0]


def test_scratch_gradients_clip_as_autograds(dlrun) -> None:
    """task.impl=scratch fills .grad by hand: clipped as torch's autograd gradients are."""
    args = ("trainer.epochs=4", "trainer.grad_clip.max_norm=0.2", "trainer.log_every=1", *QUIET)
    hand = dlrun(*args, "task.impl=scratch")
    auto = dlrun(*args, "trainer.fast=false")
    assert hand.code == auto.code == 0, hand.err + auto.err
    a = [m for m in hand.metrics() if m["split"] == "train"]
    b = [m for m in auto.metrics() if m["split"] == "train"]
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)


@pytest.mark.parametrize("n", [48, 45], ids=["whole-groups", "partial-last-group"])
@pytest.mark.parametrize("clip", [None, 0.3], ids=["no-clip", "clip"])
def test_accumulating_n_batches_is_one_batch_n_times_larger(n: int, clip: float | None) -> None:
    """float64, mean loss, SGD: 3 accumulated batches of 4 follow one batch of 12, including an
    epoch's last, shorter group (45 = 3 x 12 + 9: three batches of 4, 4 and 1)."""
    task = _task(torch.float64, n)
    task.criterion = "half_mse"  # a regression: y one-hot as floats
    x, y = task.train_data
    task.train_data = (x, torch.nn.functional.one_hot(y, 3).double())
    task.loss = lambda model, batch: half_mse_loss(model, batch)  # type: ignore[method-assign]
    models = [task.build_model().double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [optim.build(SGDConfig(lr=0.3), m.parameters(), fused=True) for m in models]
    grad_clip = GradClipConfig(max_norm=clip)
    acc = steps.build(task, models[0], opts[0], TrainerConfig(accumulate=3, grad_clip=grad_clip))
    big = steps.build(task, models[1], opts[1], TrainerConfig(grad_clip=grad_clip))
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):  # epochs, each with its own order
        order = torch.randperm(n, generator=gen)
        groups = list(steps.grouped(steps.batches(task.train_data, order, 4, True), 3))
        bigs = list(steps.batches(task.train_data, order, 12, True))
        assert len(groups) == len(bigs) == math.ceil(n / 12)
        for group, batch in zip(groups, bigs, strict=True):
            a, b = acc(group), big(batch)
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    theirs = models[1].state_dict()
    for k, w in models[0].state_dict().items():
        torch.testing.assert_close(w, theirs[k], rtol=1e-12, atol=1e-14)
        assert not torch.equal(w, task.build_model().double().state_dict()[k])


def test_accumulation_through_the_command_learns_and_says_so(dlrun) -> None:
    args = ("task=sine-bp", "trainer.epochs=20", "trainer.log_every=1", *QUIET)
    r = dlrun(*args, "trainer.batch_size=25", "trainer.accumulate=4")
    assert r.code == 0, r.err
    log = (r.run_dir / "dlrun.log").read_text()
    assert "train step: eager (trainer.accumulate=4" in log
    full = dlrun(*args)  # one batch of 100: one update per epoch too
    a = [m["loss"] for m in r.metrics() if m["split"] == "train"]
    b = [m["loss"] for m in full.metrics() if m["split"] == "train"]
    assert len(a) == 20 and a == pytest.approx(b, rel=1e-4)  # float32: to rounding
