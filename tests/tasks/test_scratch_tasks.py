"""task.impl=scratch: the hand-written forward/backward (and numpy k-means) trains through the
same loop as impl=torch and follows the same loss trajectory from the same weights and batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrun import tasks
from dlrun.config import schema
from dlrun.config.trainer import TrainerConfig
from dlrun.engine import loop
from dlrun.engine.training import Training
from dlrun.runs.setup import seed_everything
from dlrun.scratch import layers
from dlrun.tasks.housing import HousingDataConfig
from dlrun.tasks.kmeans import KMeansConfig, KMeansDataConfig
from dlrun.tasks.mnist import MNISTDataConfig
from tests.tasks.test_housing import linear_data, write_csv
from tests.tasks.test_mnist import write_data_set

CPU = torch.device("cpu")


class Collect:
    """The loop's hooks, keeping the train and validation rows."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[dict[str, float]] = []

    def on_train(self, epoch: int, metrics: dict[str, float]) -> None:
        self.train.append(metrics["loss"])

    def on_validate(self, epoch: int, metrics: dict[str, float]) -> None:
        self.val.append({k: v for k, v in metrics.items() if k != "time_s"})

    def on_epoch_end(self, epoch: int, checkpoint: bool) -> None:
        pass

    def stop_requested(self) -> None:
        return None


def to_double(task: tasks.base.Task) -> None:
    """Every floating tensor the task holds (data and evaluation sets) in float64."""
    for key, value in vars(task).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(task, key, value.double())
    task.train_data = tuple(t.double() if t.is_floating_point() else t for t in task.train_data)


def make(name: str, impl: str, tmp_path: Path, seed: int = 0, **task_cfg: object):
    """(task, model) exactly as a run with this seed builds them."""
    data: schema.DataConfig = schema.DataConfig()
    if name == "housing-regression":
        x, y = linear_data(300, seed=1)
        path = tmp_path / "housing.csv"
        if not path.exists():
            write_csv(path, x, y)
        data = HousingDataConfig(path=str(path))
    elif name == "mnist-mlp":
        if not (tmp_path / "MNIST").exists():
            write_data_set(tmp_path, n_train=120, n_test=30)
        data = MNISTDataConfig(root=str(tmp_path), download=False)
    elif name == "kmeans":
        data = KMeansDataConfig(kind="blobs", n=200, centers=4, cluster_std=1.5)
    config_class = tasks.found()[name].config
    seed_everything(seed)
    task = tasks.create(config_class(impl=impl, **task_cfg), data, CPU)
    return task, task.build_model()


SETTINGS = {  # task -> (task settings, optimizer, epochs, batch size)
    "housing-regression": ({}, lambda p: torch.optim.SGD(p, lr=0.05), 4, 64),
    "sine-bp": ({"hidden": 25}, lambda p: torch.optim.SGD(p, lr=0.3), 40, 100),
    "fizzbuzz": ({"hidden": 32}, lambda p: torch.optim.SGD(p, lr=0.05), 3, 128),
    "mnist-mlp": ({"hidden": 16}, lambda p: torch.optim.Adam(p, lr=1e-3), 3, 32),
    "kmeans": ({"k": 4, "init": "random", "tol": 0.0}, None, 8, 1),
}


def trajectory(
    name: str, impl: str, tmp_path: Path, double: bool, epochs: int | None = None
) -> Collect:
    task_cfg, make_optimizer, default_epochs, batch = SETTINGS[name]
    epochs = epochs or default_epochs
    task, model = make(name, impl, tmp_path, **task_cfg)
    if double:
        to_double(task)
        model = model.double()
    optimizer = make_optimizer(list(model.parameters())) if make_optimizer else None
    trainer = TrainerConfig(epochs=epochs, batch_size=batch, checkpoint_every=0)
    generator = torch.Generator().manual_seed(0)
    hooks = Collect()
    loop.fit(Training(task.device, task, model, optimizer, generator, trainer), hooks)
    return hooks


@pytest.mark.parametrize("name", list(SETTINGS))
def test_scratch_follows_the_torch_trajectory_in_float64(name: str, tmp_path: Path) -> None:
    torch_run = trajectory(name, "torch", tmp_path, double=True)
    scratch_run = trajectory(name, "scratch", tmp_path, double=True)
    assert len(torch_run.train) == SETTINGS[name][2] or name == "kmeans"
    np.testing.assert_allclose(scratch_run.train, torch_run.train, rtol=1e-5)
    for a, b in zip(scratch_run.val, torch_run.val, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-5)
    if name != "kmeans":  # it trained: the loss moved
        assert torch_run.train[-1] < torch_run.train[0]


@pytest.mark.parametrize("name", ["sine-bp", "fizzbuzz", "housing-regression"])
def test_scratch_follows_the_torch_trajectory_in_float32(name: str, tmp_path: Path) -> None:
    """float32 rounds differently along the two paths: agreement to 1e-4 relative over the first
    20 epochs (the seed's sine-bp at lr 0.3 then swings through losses of 300, which amplifies
    the rounding to ~1e-3 by epoch 30)."""
    epochs = 20 if name == "sine-bp" else None
    torch_run = trajectory(name, "torch", tmp_path, double=False, epochs=epochs)
    scratch_run = trajectory(name, "scratch", tmp_path, double=False, epochs=epochs)
    np.testing.assert_allclose(scratch_run.train, torch_run.train, rtol=1e-4)


@pytest.mark.parametrize("name", [n for n in SETTINGS if n != "kmeans"])
def test_the_same_seed_gives_the_same_initial_weights(name: str, tmp_path: Path) -> None:
    task_cfg = SETTINGS[name][0]
    _, torch_model = make(name, "torch", tmp_path, **task_cfg)
    task, scratch_model = make(name, "scratch", tmp_path, **task_cfg)
    assert task.hand_gradients
    assert any(isinstance(m, layers.Layer) for m in scratch_model.modules())
    a, b = torch_model.state_dict(), scratch_model.state_dict()
    assert a.keys() == b.keys()  # a checkpoint of one loads into the other
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_scratch_gradients_match_autograd_on_a_batch(tmp_path: Path) -> None:
    task, model = make("fizzbuzz", "scratch", tmp_path, hidden=8)
    to_double(task)
    model = model.double().train()
    batch = tuple(t[:16] for t in task.train_data)
    task.loss(model, batch)
    hand = {n: p.grad.clone() for n, p in model.named_parameters()}
    reference = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
    grads = torch.autograd.grad(reference, list(model.parameters()))
    for (name, _), g in zip(model.named_parameters(), grads, strict=True):
        torch.testing.assert_close(hand[name], g, rtol=1e-10, atol=1e-12)


def test_impl_scratch_from_the_command_line_and_resume(dlrun) -> None:
    """Same metrics as impl=torch (float32, 1e-4), and a resumed scratch run ends with the
    weights of an uninterrupted one, with the hand-written Adam's state restored."""
    short = ("task=sine-bp", "trainer.epochs=6", "trainer.plots=false", "trainer.log_every=1")
    torch_run = dlrun(*short)
    scratch_run = dlrun(*short, "task.impl=scratch")
    assert torch_run.code == scratch_run.code == 0, scratch_run.err
    a = [m["loss"] for m in torch_run.metrics() if m["split"] == "train"]
    b = [m["loss"] for m in scratch_run.metrics() if m["split"] == "train"]
    assert len(a) == 6
    np.testing.assert_allclose(b, a, rtol=1e-4)

    adam = ("task.impl=scratch", "optimizer=scratch_adam", "optimizer.lr=0.05")
    full = dlrun(*short, *adam)
    part = dlrun(*short[:1], *short[2:], *adam, "trainer.epochs=3")
    assert full.code == part.code == 0, part.err
    resumed = dlrun(f"resume={part.run_dir}", "trainer.epochs=6")
    assert resumed.code == 0, resumed.err
    x = torch.load(full.run_dir / "checkpoints/last.pt", weights_only=True)
    y = torch.load(part.run_dir / "checkpoints/last.pt", weights_only=True)
    assert y["epoch"] == 6 and y["optimizer_type"] == "ScratchAdam"
    assert y["optimizer"]["state"][0]["step"] == 6  # the moments carried over the resume
    for key, value in x["model"].items():
        assert torch.equal(value, y["model"][key]), key


def test_impl_is_typed(dlrun) -> None:
    r = dlrun("task=sine-bp", "task.impl=numpy")
    assert r.code == 2
    assert "task.impl=numpy is not allowed: expected one of torch, scratch" in r.err


def test_kmeans_scratch_reseeds_an_empty_cluster(tmp_path: Path) -> None:
    """A centre far from every point gets the farthest point, in numpy as in torch."""
    results = {}
    for impl in ("torch", "scratch"):
        task, model = make("kmeans", impl, tmp_path, k=3, init="random")
        model.centers[2] = 1e3  # nobody's nearest centre
        with torch.no_grad():
            task.loss(model, task.train_data)
        assert int(model.empty_reseeded) == 1
        results[impl] = model.centers.clone()
    torch.testing.assert_close(results["scratch"], results["torch"], rtol=1e-5, atol=1e-5)


def test_scratch_twin_rejects_unknown_layers() -> None:
    with pytest.raises(TypeError, match="Tanh"):
        layers.from_torch(torch.nn.Sequential(torch.nn.Tanh()))


def test_config_dataclasses_keep_impl() -> None:
    assert dataclasses.replace(KMeansConfig(), impl="scratch").impl == "scratch"
