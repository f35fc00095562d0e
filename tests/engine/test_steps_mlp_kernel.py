"""The NumPy MLP step trains as autograd and torch.optim do."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from dlrun.config.optimizers import AdamConfig, AdamWConfig, RMSpropConfig, SGDConfig
from dlrun.config.trainer import GradClipConfig, OneCycleSchedulerConfig, TrainerConfig
from dlrun.engine import optimizers as optim
from dlrun.engine import steps
from dlrun.engine.steps import fused, mlp_kernel
from dlrun.engine.training import Training
from dlrun.tasks.base import Task


class _Net(Task):
    name = "net"
    objective = "loss"
    maximize = False
    criterion = "cross_entropy"  # each test sets its own

    def __init__(self, criterion: str, layers: Callable[[], list[nn.Module]], dtype) -> None:
        super().__init__(None, None, torch.device("cpu"))  # type: ignore[arg-type]
        self.criterion = criterion
        self.layers = layers
        self.dtype = dtype

    def build_model(self) -> nn.Module:
        return nn.Sequential(*self.layers()).to(self.dtype)

    def evaluate(self, model):
        return {"loss": self.loss(model, self.train_data)}


def _data(criterion: str, n: int, shape: tuple[int, ...], dtype: torch.dtype):
    """Targets a linear teacher makes, so that training has something to learn."""
    x = torch.randn(n, *shape, dtype=dtype)
    z = x.flatten(1) @ torch.randn(6, 4, dtype=dtype)
    return x, (z.argmax(1) if criterion == "cross_entropy" else torch.sigmoid(z))


NETS = {
    "relu": lambda: [nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4)],
    "tanh-sigmoid": lambda: [
        *(nn.Linear(6, 9), nn.Tanh()),
        *(nn.Linear(9, 5), nn.Sigmoid()),
        nn.Linear(5, 4),
    ],
    "linear": lambda: [nn.Linear(6, 4)],
    "sigmoid-out": lambda: [nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4), nn.Sigmoid()],
    "flatten-identity": lambda: [
        *(nn.Flatten(), nn.Linear(6, 8), nn.Identity()),
        *(nn.Linear(8, 4), nn.ReLU()),
    ],
}
OPTIMIZERS = {
    "sgd": SGDConfig(lr=0.1),
    "momentum": SGDConfig(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "nesterov": SGDConfig(lr=0.05, momentum=0.9, nesterov=True),
    "adam": AdamConfig(lr=0.01, weight_decay=0.01),
    "amsgrad": AdamConfig(lr=0.01, amsgrad=True),
    "adamw": AdamWConfig(lr=0.01),
}


def _kernel(task, model, opt, trainer):
    return mlp_kernel.build(task, model, opt, trainer, fused.direct_update(opt))


def _train(task: _Net, kernel: bool, cfg, n_steps: int = 12):
    torch.manual_seed(1)
    model = task.build_model()
    opt = optim.build(cfg, model.parameters(), fused=True)
    trainer = TrainerConfig(mlp_kernel=kernel)
    step = steps.build(task, model, opt, trainer)
    assert (
        mlp_kernel.build(task, model, opt, trainer, fused.direct_update(opt)) is not None
    ) == kernel
    with torch.no_grad():
        before = task.loss(model, task.train_data)
    losses = []
    for i in range(n_steps):
        s = (i * 7) % 40
        losses.append(step(tuple(t[s : s + 7] for t in task.train_data)))
    with torch.no_grad():
        assert task.loss(model, task.train_data) < before  # it learned
    return torch.stack(losses), model.state_dict(), opt.state_dict()["state"]


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("criterion", ["cross_entropy", "half_mse"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_kernel_trains_as_autograd_does(net: str, criterion: str, opt: str) -> None:
    """Oracle: the autograd step with torch's fused optimizer kernels. The sums run in NumPy's
    BLAS, so the two agree to rounding: 1e-10 in float64, 1e-5 in float32, over 12 steps."""
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        torch.manual_seed(0)
        shape = (2, 3) if net.startswith("flatten") else (6,)
        task = _Net(criterion, NETS[net], dtype)
        task.train_data = _data(criterion, 48, shape, dtype)
        la, ma, sa = _train(task, True, OPTIMIZERS[opt])
        lb, mb, sb = _train(task, False, OPTIMIZERS[opt])
        torch.testing.assert_close(la, lb, rtol=tol, atol=tol)
        for k in mb:
            torch.testing.assert_close(ma[k], mb[k], rtol=tol, atol=tol)
        assert sa.keys() == sb.keys()
        for i in sb:
            assert sa[i].keys() == sb[i].keys()
            for k in sb[i]:
                torch.testing.assert_close(sa[i][k], sb[i][k], rtol=tol, atol=tol)


class _Residual(nn.Sequential):
    def forward(self, x):
        return x + super().forward(x)


def _hooked(model: nn.Module) -> nn.Module:
    model.register_forward_hook(lambda *args: None)
    return model


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Linear(3, 4, bias=False)),
        nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)),
        nn.Sequential(nn.ReLU(), nn.Linear(3, 4)),
        nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 2)),
        nn.Sequential(nn.Flatten(start_dim=0), nn.Linear(3, 4)),
        nn.Conv1d(3, 4, 1),
        _Residual(nn.Linear(3, 3)),
        _hooked(nn.Sequential(nn.Linear(3, 4))),
    ],
    ids=[
        "no-bias",
        "gelu",
        "activation-first",
        "two-activations",
        "flatten-0",
        "conv",
        "subclass",
        "hooked",
    ],
)
def test_other_models_are_not_taken(model: nn.Module) -> None:
    assert mlp_kernel.layout(model) is None


def test_the_kernel_stays_out_where_it_does_not_apply() -> None:
    task = _Net("cross_entropy", NETS["relu"], torch.float32)
    task.train_data = _data("cross_entropy", 40, (6,), torch.float32)
    model = task.build_model()
    sgd = optim.build(OPTIMIZERS["sgd"], model.parameters(), fused=True)
    assert _kernel(task, model, sgd, TrainerConfig()) is not None
    rms = optim.build(RMSpropConfig(), model.parameters(), fused=True)
    assert _kernel(task, model, rms, TrainerConfig()) is None
    for trainer in (
        TrainerConfig(fast=False),
        TrainerConfig(detect_anomaly=True),
        TrainerConfig(compile=True),
    ):
        assert _kernel(task, model, sgd, trainer) is None
    model.extra = nn.Parameter(torch.ones(2))  # a parameter outside the layers
    sgd = optim.build(OPTIMIZERS["sgd"], model.parameters(), fused=True)
    assert _kernel(task, model, sgd, TrainerConfig()) is None
    task.criterion = None
    assert _kernel(task, task.build_model(), sgd, TrainerConfig()) is None


def test_big_activations_train_through_autograd() -> None:
    """Past MAX_ACTIVATIONS a step's elementwise maths outweighs the per-op savings."""
    task = _Net(
        "cross_entropy", lambda: [nn.Linear(6, 600), nn.ReLU(), nn.Linear(600, 4)], torch.float32
    )
    task.train_data = _data("cross_entropy", 1000, (6,), torch.float32)
    model = task.build_model()
    sgd = optim.build(OPTIMIZERS["sgd"], model.parameters(), fused=True)
    assert 64 * 604 <= mlp_kernel.MAX_ACTIVATIONS < 1000 * 604
    assert _kernel(task, model, sgd, TrainerConfig(batch_size=64)) is not None
    assert _kernel(task, model, sgd, TrainerConfig(batch_size=1000)) is None


@pytest.mark.parametrize(
    "data",
    [
        (torch.randn(40, 6), torch.randn(40)),  # MSE/2 targets that autograd would broadcast
        (torch.randn(40, 6), torch.randn(40, 4, dtype=torch.float64)),
        (torch.randn(40, 2, 6), torch.randn(40, 2, 4)),  # rows of rows, no Flatten
        (torch.randint(0, 2, (40, 6)), torch.randn(40, 4)),
    ],
    ids=["broadcast-targets", "float64-targets", "3-d-inputs", "integer-inputs"],
)
def test_data_the_kernel_would_read_otherwise_goes_to_autograd(data) -> None:
    task = _Net("half_mse", NETS["relu"], torch.float32)
    task.train_data = data
    model = task.build_model()
    sgd = optim.build(OPTIMIZERS["sgd"], model.parameters(), fused=True)
    assert _kernel(task, model, sgd, TrainerConfig()) is None
    task.train_data = _data("half_mse", 40, (6,), torch.float32)
    assert _kernel(task, model, sgd, TrainerConfig()) is not None


def test_a_task_needs_a_criterion_or_a_loss() -> None:
    with pytest.raises(TypeError, match="set criterion"):
        type("NoLoss", (Task,), {"name": "x", "objective": "loss", "maximize": False})
    with pytest.raises(TypeError, match="not one of"):
        type("Odd", (Task,), {"criterion": "hinge"})


@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("criterion", ["cross_entropy", "half_mse"])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_a_whole_epoch_in_one_call_trains_as_autograd_steps_do(
    net: str, criterion: str, opt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's whole-epoch call (plain SGD on [W | b] weights, other optimizers through the
    kernel's own step) against autograd on the same batches: shuffled and in order, a partial
    last batch, an epoch cut short, clipping, data gathered per epoch and per batch."""
    shape = (2, 3) if net.startswith("flatten") else (6,)
    cases = [  # order, batches of 8 trained (45 rows: 5 full and one of 5), clipping
        (torch.randperm(45, generator=torch.Generator().manual_seed(2)), 6, None),
        (None, 6, GradClipConfig(max_norm=0.3)),
        (torch.randperm(45, generator=torch.Generator().manual_seed(3)), 3, None),
        (torch.randperm(45), 6, GradClipConfig(value=0.05)),
    ]
    for gather in (True, False):  # small data is gathered once an epoch, big data per batch
        monkeypatch.setattr(mlp_kernel, "EPOCH_GATHER_BYTES", 2**24 if gather else 0)
        for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
            task = _Net(criterion, NETS[net], dtype)
            task.train_data = _data(criterion, 45, shape, dtype)
            for order, count, clipping in cases:
                trained = []
                for kernel in (True, False):
                    torch.manual_seed(1)
                    model = task.build_model()
                    optimizer = optim.build(OPTIMIZERS[opt], model.parameters(), fused=True)
                    trainer = TrainerConfig(
                        mlp_kernel=kernel, grad_clip=clipping or GradClipConfig()
                    )
                    step = steps.build(task, model, optimizer, trainer)
                    epoch = steps.whole_epoch(step)
                    assert (epoch is not None) == kernel
                    losses = []
                    for _ in range(3):
                        if kernel:
                            losses.append(epoch(task.train_data, order, 8, count))
                        else:
                            feed = steps.batches(task.train_data, order, 8, True)
                            batches = itertools.islice(feed, count)
                            losses.append(torch.stack([step(b) for b in batches]))
                    trained.append((torch.stack(losses), model.state_dict()))
                (la, ma), (lb, mb) = trained
                assert la.shape == lb.shape
                torch.testing.assert_close(la, lb, rtol=tol, atol=tol)
                for k in mb:
                    torch.testing.assert_close(ma[k], mb[k], rtol=tol, atol=tol)


def test_the_loop_trains_whole_epochs_in_one_call_but_steps_for_a_per_update_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plain SGD's epochs go through the one call; onecycle, which changes the rate between
    steps, wraps the step, and the loop then feeds it batch by batch."""
    from dlrun.engine import loop
    from dlrun.engine.schedules import build as build_schedule

    calls = {"epoch": 0}
    real = steps.whole_epoch

    def counted(step):
        epoch = real(step)
        if epoch is None:
            return None

        def call(*args):
            calls["epoch"] += 1
            return epoch(*args)

        return call

    monkeypatch.setattr(steps, "whole_epoch", counted)
    task = _Net("cross_entropy", NETS["relu"], torch.float32)
    task.train_data = _data("cross_entropy", 40, (6,), torch.float32)

    class _Hooks:
        def on_train(self, epoch, metrics): ...
        def on_validate(self, epoch, metrics): ...
        def on_epoch_end(self, epoch, checkpoint): ...
        def stop_requested(self):
            return None

    for onecycle in (False, True):
        calls["epoch"] = 0
        model = task.build_model()
        optimizer = optim.build(OPTIMIZERS["sgd"], model.parameters(), fused=True)
        trainer = TrainerConfig(epochs=3, batch_size=8)
        schedule = None
        if onecycle:
            cfg = OneCycleSchedulerConfig(max_lr=0.2)
            schedule = build_schedule(cfg, optimizer, 3, 5, False, "loss")
        training = Training(task.device, task, model, optimizer, torch.Generator(), trainer)
        loop.fit(dataclasses.replace(training, schedule=schedule), _Hooks())
        assert calls["epoch"] == (0 if onecycle else 3)
