"""dlrun-gradcheck: passes for every hand-written task, fails (exit 1) for a wrong backward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlrun.commands import gradcheck
from dlrun.scratch import layers
from tests.tasks.test_housing import linear_data, write_csv
from tests.tasks.test_mnist import write_data_set


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        gradcheck.main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("task", ["fizzbuzz", "sine-bp", "housing-regression", "mnist-mlp"])
def test_every_hand_written_task_passes(task: str, tmp_path: Path, capsys) -> None:
    extra: list[str] = []
    if task == "housing-regression":
        x, y = linear_data(40)
        extra = [f"data.path={write_csv(tmp_path / 'h.csv', x, y)}"]
    if task == "mnist-mlp":
        write_data_set(tmp_path, n_train=20, n_test=10)
        extra = [f"data.root={tmp_path}", "data.download=false", "task.hidden=8"]
    code, out, err = run(capsys, f"task={task}", *extra, "--elements", "8")
    assert code == 0, out + err
    assert "FAIL" not in out
    rows = [line for line in out.splitlines() if "pass" in line]
    assert len(rows) == (2 if task == "housing-regression" else 4)  # one per parameter
    assert "weight" in out and "bias" in out


def test_a_wrong_backward_fails(monkeypatch, capsys) -> None:
    """ReLU's backward forgetting its mask: the first layer's gradients are wrong."""
    monkeypatch.setattr(layers.ReLU, "backward", lambda self, grad_out: grad_out)
    code, out, err = run(capsys, "task=fizzbuzz", "task.hidden=6", "--elements", "8")
    assert code == 1
    assert "FAIL" in out
    assert err.strip() == "dlrun-gradcheck: FAILED: 0.weight, 0.bias"


def test_a_gradient_off_by_a_little_fails_against_finite_differences(monkeypatch, capsys):
    original = layers.Linear.backward

    def scaled(self, grad_out):
        result = original(self, grad_out)
        self.bias.grad *= 1 + 1e-3
        return result

    monkeypatch.setattr(layers.Linear, "backward", scaled)
    code, out, _ = run(capsys, "task=sine-bp", "--elements", "4")
    assert code == 1 and out.count("FAIL") == 2  # both biases


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["task=kmeans"], "task=kmeans has no gradients to check"),
        (["task=nw-kernel"], "task=nw-kernel has no hand-written implementation"),
        (["task=nope"], "Could not find 'task/nope'"),
        (["task.impl=numpy"], "task.impl=numpy is not allowed"),
        (["--batch", "0"], "--batch=0: expected an integer >= 1"),
        (["--batch", "x"], "argument --batch: invalid int value: 'x'"),
    ],
)
def test_usage_mistakes_are_one_line(argv: list[str], message: str, capsys) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("dlrun-gradcheck: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_check_gives_one_result_per_parameter() -> None:
    config = gradcheck.compose(["task=sine-bp", "task.hidden=3"])
    checks = gradcheck.check(config, batch_size=4, elements=3)
    assert all(c.ok for c in checks)
    assert [c.shape for c in checks] == [(3, 1), (3,), (1, 3), (1,)]
    assert torch.get_default_dtype() == torch.float32
