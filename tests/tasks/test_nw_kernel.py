"""nw-kernel: the attention weights, the non-parametric formula against numpy, the parametric
training against the seed's own code, and both variants end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dlrun.tasks.nw_kernel import NWKernelConfig
from dlrun.tasks.nw_kernel.task import NWKernelRegression


def make_task(variant: str, seed: int = 0) -> tuple[NWKernelRegression, nn.Module]:
    torch.manual_seed(seed)  # what the run does before building the task
    task = NWKernelRegression(NWKernelConfig(variant=variant), None, torch.device("cpu"))
    return task, task.build_model()


def numpy_nadaraya_watson(x_query: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The formula, written out: sum_i softmax_i(-(x_q - x_i)^2 / 2) y_i."""
    prediction = []
    for q in x_query:
        kernel = np.exp(-((q - x) ** 2) / 2)
        prediction.append(np.sum(kernel / kernel.sum() * y))
    return np.array(prediction)


def f(x: torch.Tensor) -> torch.Tensor:
    return 2 * torch.sin(x) + x**0.8


class SeedNWKernelRegression(nn.Module):  # the seed's (d2l's) model, as written there
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand((1,), requires_grad=True))

    def forward(self, queries, keys, values):
        queries = queries.repeat_interleave(keys.shape[1]).reshape((-1, keys.shape[1]))
        self.attention_weights = nn.functional.softmax(
            -(((queries - keys) * self.w) ** 2) / 2, dim=1
        )
        return torch.bmm(self.attention_weights.unsqueeze(1), values.unsqueeze(-1)).reshape(-1)


def seed_training(seed: int) -> tuple[list[float], float, float]:
    """The seed's script: its per-epoch l.sum(), the learned w and the test mse."""
    torch.manual_seed(seed)
    n_train = 50
    x_train, _ = torch.sort(torch.rand(n_train) * 5)
    y_train = f(x_train) + torch.normal(0.0, 0.5, (n_train,))
    x_test = torch.arange(0, 5, 0.1)
    y_truth = f(x_test)
    n_test = len(x_test)
    mask = (1 - torch.eye(n_train)).type(torch.bool)
    keys = x_train.repeat((n_train, 1))[mask].reshape((n_train, -1))
    values = y_train.repeat((n_train, 1))[mask].reshape((n_train, -1))
    net = SeedNWKernelRegression()
    loss = nn.MSELoss(reduction="none")
    trainer = torch.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for _ in range(5):
        trainer.zero_grad()
        ell = loss(net(x_train, keys, values), y_train) / 2
        ell.sum().backward()
        trainer.step()
        losses.append(float(ell.sum().detach()))
    with torch.no_grad():
        y_hat = net(x_test, x_train.repeat((n_test, 1)), y_train.repeat((n_test, 1)))
    return losses, float(net.w.detach()), float(((y_hat - y_truth) ** 2).mean())


@pytest.mark.parametrize("variant", ["parametric", "nonparametric"])
def test_attention_rows_sum_to_one(variant: str) -> None:
    task, model = make_task(variant)
    if model.w is not None:
        with torch.no_grad():
            model.w.fill_(3.0)  # a sharp kernel: rows far from uniform
    weights = model.attention(task.x_test, task.x_train)
    assert weights.shape == (50, 50)  # test queries x training keys
    assert torch.allclose(weights.sum(1), torch.ones(50), atol=1e-6)
    assert (weights >= 0).all() and weights.max() > 0.05  # not uniform (1/50)
    # leave-one-out: each training point attends to the 49 others only
    exclude = torch.eye(50, dtype=torch.bool)
    weights = model.attention(task.x_train, task.x_train, exclude)
    assert torch.allclose(weights.sum(1), torch.ones(50), atol=1e-6)
    assert torch.all(weights.diagonal() == 0)


def test_nonparametric_prediction_equals_the_formula() -> None:
    task, model = make_task("nonparametric", seed=3)
    assert list(model.parameters()) == []
    x, y = task.x_train.numpy().astype(np.float64), task.y_train.numpy().astype(np.float64)
    expected = numpy_nadaraya_watson(np.arange(0, 5, 0.1), x, y)
    assert np.allclose(task.predict(model).numpy(), expected, rtol=1e-5, atol=1e-5)
    truth = 2 * np.sin(np.arange(0, 5, 0.1)) + np.arange(0, 5, 0.1) ** 0.8
    assert math.isclose(
        float(task.evaluate(model)["mse"]), np.mean((expected - truth) ** 2), rel_tol=1e-4
    )


def test_the_data_is_the_seeds() -> None:
    task, _ = make_task("parametric", seed=5)
    torch.manual_seed(5)
    x, _ = torch.sort(torch.rand(50) * 5)
    y = f(x) + torch.normal(0.0, 0.5, (50,))
    assert torch.equal(task.x_train, x) and torch.equal(task.y_train, y)
    assert torch.all(task.x_train[1:] >= task.x_train[:-1])
    assert torch.allclose(task.x_test, torch.arange(0, 5, 0.1))
    assert torch.equal(task.y_truth, f(task.x_test))  # scored against the noise-free truth


def test_batches_estimate_the_full_leave_one_out_loss() -> None:
    """Any batch split: the loop's weighted mean of batch losses is the seed's summed loss."""
    task, model = make_task("parametric")
    full = task.loss(model, task.train_data)
    order = torch.randperm(50)
    parts = [
        task.loss(model, tuple(t[order[s : s + 10]] for t in task.train_data))
        for s in range(0, 50, 10)
    ]
    assert torch.allclose(sum(p * 10 / 50 for p in parts), full)


def test_parametric_training_matches_the_seed_and_reduces_the_loss(dlrun) -> None:
    r = dlrun("task=nw-kernel", "trainer.plots=false")  # the defaults: parametric, 5 epochs
    assert r.code == 0, r.err
    rows = r.metrics()
    train = [m["loss"] for m in rows if m["split"] == "train"]
    val = [m for m in rows if m["split"] == "val"]
    assert len(train) == len(val) == 5  # one full-batch step per epoch, validated every epoch
    assert all(b < a for a, b in zip(train, train[1:], strict=False))
    assert train[-1] < 0.5 * train[0]
    seed_losses, seed_w, seed_mse = seed_training(0)
    assert np.allclose(train, seed_losses, rtol=1e-4)  # the seed's l.sum(), epoch by epoch
    w = torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]["w"]
    assert math.isclose(float(w), seed_w, rel_tol=1e-4)
    summary = r.summary()
    assert math.isclose(summary["final"]["mse"], seed_mse, rel_tol=1e-4)
    assert summary["objective_name"] == "mse" and summary["maximize"] is False
    # the learned width beats the fixed one (w = 1) on the test grid
    task, model = make_task("nonparametric")
    assert summary["final"]["mse"] < 0.5 * float(task.evaluate(model)["mse"])


def test_nonparametric_runs_end_to_end_without_training(dlrun) -> None:
    r = dlrun("task=nw-kernel", "task.variant=nonparametric")  # no other override
    assert r.code == 0, r.err
    summary = r.summary()
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    # the run seeds torch with seed=0 before building the task: rebuild its data and check
    torch.manual_seed(0)
    x, _ = torch.sort(torch.rand(50) * 5)
    y = f(x) + torch.normal(0.0, 0.5, (50,))
    grid = np.arange(0, 5, 0.1)
    expected = numpy_nadaraya_watson(grid, x.double().numpy(), y.double().numpy())
    mse = np.mean((expected - (2 * np.sin(grid) + grid**0.8)) ** 2)
    assert math.isclose(summary["objective"], mse, rel_tol=1e-4)
    assert [m["split"] for m in r.metrics()] == ["train", "val"]  # logged and validated once
    for plot in ("fit", "attention", "curves"):
        assert (r.run_dir / "plots" / f"{plot}.png").stat().st_size > 0
    assert "nothing to train" in r.out


@pytest.mark.parametrize(
    ("override", "key"),
    [("task.variant=kernel", "task.variant"), ("task.n_train=1", "task.n_train")],
)
def test_impossible_values_are_refused(dlrun, override: str, key: str) -> None:
    r = dlrun("task=nw-kernel", override)
    assert r.code == 2 and r.err.startswith(f"dlrun: error: {key}=")
