"""Which step a run gets, decided from plain facts: every branch of the CUDA-graph choice and of
the bf16 and compile rules, on any machine (the CUDA runs themselves are in test_steps_cuda.py)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from torch import nn

from dlrun.config.optimizers import AdamConfig
from dlrun.config.trainer import TrainerConfig
from dlrun.engine import optimizers as optim
from dlrun.engine import steps
from dlrun.engine.steps import cuda_graph
from dlrun.engine.steps.cuda_graph import Facts
from tests.engine.test_steps import _Toy

ADAM = Facts(device="cuda", optimizer="Adam", direct=True)


@pytest.mark.parametrize("setting", [None, True])
def test_a_plain_cuda_step_is_graphed_by_default_and_when_asked(setting) -> None:
    assert cuda_graph.choose(setting, ADAM) == (True, None)


def test_false_never_graphs_and_says_nothing() -> None:
    assert cuda_graph.choose(False, ADAM) == (False, None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"optimizer": None}, "this task trains without an optimizer"),
        ({"hand_gradients": True}, "this task's gradients are by hand"),
        ({"accumulate": 4}, "trainer.accumulate=4"),
        ({"fast": False}, "trainer.fast=false"),
        ({"direct": False, "optimizer": "RMSprop"}, "RMSprop cannot be captured"),
        ({"compile": True}, "not combined with trainer.compile"),
        ({"schedule": "cosine"}, "scheduler=cosine changes the learning rate"),
    ],
)
@pytest.mark.parametrize("setting", [None, True])
def test_each_reason_for_eager_on_cuda_is_named(setting, change: dict, reason: str) -> None:
    graph, why = cuda_graph.choose(setting, replace(ADAM, **change))
    assert not graph and why is not None and why.startswith(reason)


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_off_cuda_never_graphs_and_only_an_explicit_true_says_why(device: str) -> None:
    facts = replace(ADAM, device=device)
    assert cuda_graph.choose(None, facts) == (False, None)
    assert cuda_graph.choose(True, facts) == (False, f"device {device} is not CUDA")


def test_the_schema_takes_null_true_and_false_and_defaults_to_auto() -> None:
    assert TrainerConfig().cuda_graph is None
    for value in (True, False, None):
        assert TrainerConfig(cuda_graph=value).cuda_graph is value


def _built(caplog, trainer: TrainerConfig, cfg=None) -> str:
    torch.manual_seed(0)
    task = _Toy(None, None, torch.device("cpu"))  # type: ignore[arg-type]
    task.train_data = (torch.randn(32, 5), torch.randint(0, 3, (32,)))
    model = task.build_model()
    opt = optim.build(cfg or AdamConfig(lr=0.01), model.parameters(), fused=True)
    with caplog.at_level(logging.INFO, logger="dlrun"):
        steps.build(task, model, opt, trainer)
    return caplog.text


def test_a_cpu_run_by_default_is_the_fused_step_with_no_graph_line(caplog) -> None:
    text = _built(caplog, TrainerConfig())
    assert "train step: fused (Adam fused kernel)" in text
    assert "cuda_graph" not in text


def test_an_explicit_graph_on_the_cpu_falls_back_with_its_reason(caplog) -> None:
    text = _built(caplog, TrainerConfig(cuda_graph=True, accumulate=2))
    assert "trainer.cuda_graph=true: device cpu is not CUDA; not captured" in text
    assert "train step: eager (trainer.accumulate=2" in text


def test_step_flop_counts_six_per_trained_parameter_per_example() -> None:
    model = nn.Linear(10, 4)  # 44 parameters
    model.bias.requires_grad_(False)
    assert steps.step_flop(model, 8) == 6 * 8 * 40


@pytest.mark.parametrize("device", ["cuda"])
def test_bf16_is_refused_for_a_launch_bound_step_and_allowed_for_a_big_one(device: str) -> None:
    small = steps.MIN_STEP_FLOP - 1
    why = steps.bf16_why_not(device, small)
    assert why is not None and "launch-bound" in why
    assert steps.bf16_why_not(device, steps.MIN_STEP_FLOP) is None
    # mnist-mlp at batch 64 (about 100k weights), measured 4x slower in bf16: refused
    mnist = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    assert steps.bf16_why_not(device, steps.step_flop(mnist, 64)) is not None


def test_compile_says_why_it_will_not_help_a_small_step() -> None:
    assert "launch-bound" in (steps.compile_why_not(steps.MIN_STEP_FLOP - 1) or "")
    assert steps.compile_why_not(steps.MIN_STEP_FLOP) is None


def test_a_small_compiled_run_logs_the_reason_and_still_compiles(caplog, monkeypatch) -> None:
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or fn)
    text = _built(caplog, TrainerConfig(compile=True))
    assert compiled and "trainer.compile=true: a step of" in text
    assert "compiling as asked" in text


def test_bf16_on_a_small_cuda_model_runs_fp32_with_one_line(caplog) -> None:
    """The decision inside the step's loss, on a task that says it is on CUDA: the loss is the
    plain fp32 one (no autocast), and the log says why."""
    task = _Toy(None, None, torch.device("cpu"))  # type: ignore[arg-type]
    task.device = torch.device("cuda")  # only the decision reads it: nothing runs there
    model = task.build_model()
    batch = (torch.randn(8, 5), torch.randint(0, 3, (8,)))
    with caplog.at_level(logging.INFO, logger="dlrun"):
        loss = steps._loss(task, model, TrainerConfig(precision="bf16"))(batch)
    assert "trainer.precision=bf16: a step of" in caplog.text and "running fp32" in caplog.text
    assert loss.dtype == torch.float32
    assert torch.equal(loss, task.loss(model, batch))
