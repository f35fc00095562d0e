"""The model's output is checked against the task's loss on the first batch, before any
training: a shape that broadcasts (an (N,) output for (N, 1) targets) would train without a word
and never learn. One line naming both shapes, exit code 2, no run directory left."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlrun.tasks.base import Task
from tests.tasks.test_user_task_errors import TASK, write_task

QUIET = ("trainer.plots=false", "trainer.progress=false", "trainer.epochs=2")
MODEL = "nn.Sequential(nn.Linear(1, h), nn.Tanh(), nn.Linear(h, 1))"

# a classifier of 3 classes: is x below -1, between -1 and 1, or above 1
CLASSES = (
    TASK.replace('criterion = "half_mse"', 'criterion = "cross_entropy"')
    .replace('objective = "mse"', 'objective = "accuracy"')
    .replace("maximize = False", "maximize = True")
    .replace("self.train_data = (x, torch.sin(x))", "self.train_data = (x, LABELS)")
    .replace("LABELS", "(x[:, 0] > -1).long() + (x[:, 0] > 1).long()")
    .replace("nn.Linear(h, 1))", "nn.Linear(h, 3))")
    .replace(
        "mse = torch.mean((model(x) - y) ** 2)  # EVALUATE\n"
        '        return {"loss": mse / 2, "mse": mse}',
        "scores = model(x)\n"
        '        return {"loss": nn.functional.cross_entropy(scores, y), '
        '"accuracy": (scores.argmax(1) == y).float().mean()}',
    )
)


def refused(dlrun, path: Path, *args: str) -> str:
    """Run the task; assert it was refused before any work; return the line."""
    r = dlrun(f"task={path}", *QUIET, "trainer.batch_size=16", *args)
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: task mine: the model"), r.err
    assert f"build_model() at {path}:" in lines[0]
    assert not r.run_dir.exists()  # no run directory left behind
    return lines[0]


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (MODEL.replace("nn.Linear(h, 1))", "nn.Linear(h, 1), nn.Flatten(0))"), "(16,)"),
        (
            MODEL.replace("nn.Linear(h, 1))", "nn.Linear(h, 5), nn.Unflatten(1, (5, 1)))"),
            "(16, 5, 1)",
        ),
    ],
)
def test_half_mse_refuses_an_output_that_is_not_the_targets_shape(
    dlrun, tmp_path: Path, model: str, shape: str
) -> None:
    path = write_task(tmp_path, TASK.replace(MODEL, model))
    line = refused(dlrun, path)
    assert f"an output of shape {shape} for targets of shape (16, 1)" in line
    assert "half_mse expects the output to have the targets' shape (16, 1)" in line


def test_the_right_shapes_train(dlrun, tmp_path: Path) -> None:
    """The check refuses nothing that is right: the regression and the classifier learn."""
    learn = ("optimizer=adam", "optimizer.lr=0.01", "trainer.batch_size=16", "trainer.epochs=30")
    r = dlrun(f"task={write_task(tmp_path / 'a', TASK)}", *QUIET[:2], *learn)
    assert r.code == 0, r.err
    mse = [m["mse"] for m in r.metrics() if m["split"] == "val"]
    assert mse[-1] < 0.5 * mse[0]
    r = dlrun(f"task={write_task(tmp_path / 'b', CLASSES)}", *QUIET[:2], *learn)
    assert r.code == 0, r.err
    assert r.summary()["final"]["accuracy"] > 0.8


def test_cross_entropy_refuses_an_output_that_is_not_n_by_classes(dlrun, tmp_path: Path) -> None:
    path = write_task(
        tmp_path, CLASSES.replace("nn.Linear(h, 3))", "nn.Linear(h, 3), nn.Flatten(0))")
    )
    line = refused(dlrun, path)
    assert "an output of shape (48,) for targets of shape (16,)" in line
    assert "cross_entropy expects an output of shape (N, classes) for 16 labels" in line


def test_cross_entropy_refuses_labels_beyond_the_outputs_classes(dlrun, tmp_path: Path) -> None:
    """Two outputs for three classes: CPU torch raises deep in a step, CUDA asserts; refused
    here before training, naming the classes and the labels. (The first batch, shuffled or
    not, is the first 16 points here: all below -1, label 0; so unshuffled data makes the
    labels 2 come first.)"""
    source = CLASSES.replace("nn.Linear(h, 3))", "nn.Linear(h, 2))").replace(
        "torch.linspace(-3, 3, 64", "torch.linspace(3, -3, 64"
    )
    line = refused(dlrun, write_task(tmp_path, source))
    assert "an output of shape (16, 2) for targets of shape (16,)" in line
    assert (
        "labels from 0 to 1 for the output's 2 classes; the first batch has labels from 2 to 2"
        in line
    )


OWN_LOSS = """
    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y = batch
        return torch.mean(torch.abs(model(x).reshape(-1, 1) - y))
"""


def test_a_task_with_its_own_loss_declares_its_contract(dlrun, tmp_path: Path) -> None:
    """contract = "half_mse": the same check for a loss of the task's own; without it the loss
    is the task's business (here its reshape makes the (N,) output right)."""
    flat = TASK.replace(MODEL, MODEL.replace("nn.Linear(h, 1))", "nn.Linear(h, 1), nn.Flatten(0))"))
    flat = flat.replace(
        "mse = torch.mean((model(x) - y)", "mse = torch.mean((model(x)[:, None] - y)"
    )
    own = flat.replace('criterion = "half_mse"', "") + OWN_LOSS
    r = dlrun(f"task={write_task(tmp_path / 'own', own)}", *QUIET)
    assert r.code == 0, r.err
    declared = own.replace(
        "    maximize = False\n", '    maximize = False\n    contract = "half_mse"\n'
    )
    line = refused(dlrun, write_task(tmp_path / "declared", declared))
    assert "an output of shape (16,) for targets of shape (16, 1)" in line


def test_a_contract_is_one_of_the_shared_criteria() -> None:
    with pytest.raises(TypeError, match="contract 'l1' is not one of cross_entropy, half_mse"):

        class Wrong(Task):
            criterion = "half_mse"
            contract = "l1"

            def build_model(self) -> torch.nn.Module:
                return torch.nn.Linear(1, 1)

            def evaluate(self, model: torch.nn.Module) -> dict:
                return {}
