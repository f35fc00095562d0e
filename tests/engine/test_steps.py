"""The fast train step: the same training as the textbook eager step, and lean start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from dlrun.config.optimizers import AdamConfig, AdamWConfig, SGDConfig
from dlrun.config.trainer import TrainerConfig
from dlrun.engine import optimizers as optim
from dlrun.engine import steps
from dlrun.rundir.summary import shortest
from dlrun.tasks.base import Task, classification_loss

QUICK = (
    "trainer.epochs=12",
    "trainer.log_every=1",
    "trainer.validate_every=4",
    "trainer.checkpoint_every=0",
    "trainer.plots=false",
)


def _losses(result) -> list[tuple[int, str, float]]:
    return [(m["epoch"], m["split"], m["loss"]) for m in result.metrics()]


def test_fast_and_eager_paths_train_identically_with_sgd(dlrun) -> None:
    """FizzBuzz's SGD: the fused update computes p - lr * g exactly as the textbook step."""
    fast = dlrun(*QUICK, "trainer.fast=true", "trainer.mlp_kernel=false")
    eager = dlrun(*QUICK, "trainer.fast=false")
    assert fast.code == eager.code == 0, fast.err + eager.err
    assert "train step: fused (SGD fused kernel)" in (fast.run_dir / "dlrun.log").read_text()
    assert "train step: eager (trainer.fast=false)" in (eager.run_dir / "dlrun.log").read_text()
    assert _losses(fast) == _losses(eager)
    a = torch.load(fast.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(eager.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("args", [(), ("optimizer=adam", "optimizer.lr=0.01")], ids=["sgd", "adam"])
def test_the_mlp_kernel_trains_as_the_textbook_step(dlrun, args) -> None:
    """The real command, FizzBuzz: the NumPy kernel (the default here) against zero_grad /
    backward / step, epoch by epoch, and the weights it leaves."""
    kernel = dlrun(*QUICK, *args, "device=cpu")  # the kernel is the CPU's
    eager = dlrun(*QUICK, *args, "trainer.fast=false", "device=cpu")
    assert kernel.code == eager.code == 0, kernel.err + eager.err
    assert (
        "train step: mlp_kernel (the NumPy MLP kernel" in (kernel.run_dir / "dlrun.log").read_text()
    )
    a, b = _losses(kernel), _losses(eager)
    assert [r[:2] for r in a] == [r[:2] for r in b]
    for (_, _, x), (_, _, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-5)
    wa = torch.load(kernel.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    wb = torch.load(eager.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "args",
    [
        ("optimizer=adam", "optimizer.lr=0.01"),
        ("optimizer=adamw", "optimizer.amsgrad=true"),
        ("optimizer=momentum", "optimizer.nesterov=true", "optimizer.weight_decay=1e-3"),
        ("optimizer=rmsprop",),
    ],
    ids=["adam", "adamw-amsgrad", "nesterov", "rmsprop"],
)
def test_fast_and_eager_paths_give_the_same_loss_trajectory(dlrun, args) -> None:
    """Fused kernels round differently from the per-tensor ones: equal to 1e-5 relative."""
    fast = dlrun(*QUICK, *args)
    eager = dlrun(*QUICK, *args, "trainer.fast=false")
    assert fast.code == eager.code == 0, fast.err + eager.err
    a, b = _losses(fast), _losses(eager)
    assert [r[:2] for r in a] == [r[:2] for r in b]
    assert a[-1][2] < a[0][2]  # it learned something
    for (_, _, x), (_, _, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-5)


class _Toy(Task):
    """A two-layer regression with one parameter that the loss never uses."""

    name = "toy"
    objective = "loss"
    maximize = False

    def build_model(self) -> nn.Module:
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        model.unused = nn.Parameter(torch.ones(2))
        return model

    def loss(self, model, batch):
        return classification_loss(model, batch)

    def evaluate(self, model):
        return {"loss": self.loss(model, self.train_data)}


@pytest.mark.parametrize(
    "cfg",
    [
        SGDConfig(lr=0.1),
        SGDConfig(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        SGDConfig(lr=0.1, momentum=0.9, nesterov=True),
        AdamConfig(lr=0.01, weight_decay=0.01),
        AdamConfig(lr=0.01, amsgrad=True),
        AdamWConfig(lr=0.01),
    ],
    ids=repr,
)
def test_direct_update_is_torch_optim_fused_step(cfg) -> None:
    """Oracle: torch.optim's own fused step, bit for bit, state included."""
    torch.manual_seed(0)
    task = _Toy(None, None, torch.device("cpu"))  # type: ignore[arg-type]
    task.train_data = (torch.randn(32, 5), torch.randint(0, 3, (32,)))
    models = [task.build_model() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [optim.build(cfg, m.parameters(), fused=True) for m in models]
    step = steps.build(task, models[0], opts[0], TrainerConfig())
    for i in range(5):
        batch = tuple(t[i : i + 8] for t in task.train_data)
        step(batch)
        opts[1].zero_grad(set_to_none=True)
        classification_loss(models[1], batch).backward()
        opts[1].step()
    theirs = models[1].state_dict()
    for k, a in models[0].state_dict().items():
        assert torch.equal(a, theirs[k]), k
    assert torch.equal(models[0].unused, torch.ones(2))  # no gradient: left alone
    sa, sb = opts[0].state_dict()["state"], opts[1].state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)


def test_best_checkpoint_holds_the_best_epoch(dlrun) -> None:
    r = dlrun("task=sine-bp", "trainer.epochs=40", "trainer.validate_every=5", "optimizer.lr=2")
    assert r.code == 0, r.err
    best = r.summary()["best"]
    state = torch.load(r.run_dir / "checkpoints/best.pt", weights_only=True)
    assert state["epoch"] == best["epoch"] and shortest(state["best"]["mse"]) == best["mse"]
    vals = {m["epoch"]: m["mse"] for m in r.metrics() if m["split"] == "val"}
    assert best["mse"] == shortest(min(vals.values())) == shortest(vals[best["epoch"]])


def test_bf16_without_cuda_is_refused(dlrun, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "keep").touch()  # a refused run removes its empty directories, not this one
    r = dlrun("trainer.precision=bf16", "device=cpu", "trainer.epochs=1")
    assert r.code == 2 and "trainer.precision=bf16 needs a CUDA device" in r.err
    bad = dlrun("trainer.precision=fp8")
    assert bad.code == 2 and "trainer.precision" in bad.err


def test_cuda_graph_on_the_cpu_falls_back_to_the_same_eager_training(dlrun) -> None:
    plain = dlrun(*QUICK, "optimizer=adam", "device=cpu")
    graph = dlrun(*QUICK, "optimizer=adam", "trainer.cuda_graph=true", "device=cpu")
    assert plain.code == graph.code == 0, graph.err
    assert _losses(plain) == _losses(graph)
    log = (graph.run_dir / "dlrun.log").read_text()
    assert "trainer.cuda_graph=true: device cpu is not CUDA; not captured" in log


def test_a_short_run_imports_neither_the_compiler_nor_other_tasks_libraries(
    tmp_path: Path,
) -> None:
    """Start-up stays lean: torch's compiler, scikit-learn and torchvision are not loaded."""
    code = (
        "import sys, json; from dlrun.cli import main as cli\n"
        "try:\n"
        f"    cli.main(['trainer.epochs=2', 'trainer.plots=false', 'hydra.run.dir={tmp_path}/r'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "mods = ['torch._dynamo', 'sklearn', 'torchvision', 'matplotlib', 'scipy']\n"
        "print(json.dumps({m: m in sys.modules for m in mods}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == dict.fromkeys(loaded, False)
    assert (tmp_path / "r" / "checkpoints" / "last.pt").is_file()


def cuda(test: Callable[..., None]) -> Callable[..., None]:
    """Selected by ``pytest -m cuda`` (benchmarks/cuda_check.sh); skipped without CUDA."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA")(test))


@cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cuda_graph_trains_like_the_eager_step(dlrun, optimizer: str) -> None:
    args = (*QUICK, f"optimizer={optimizer}", "device=cuda")
    graph = dlrun(*args, "trainer.cuda_graph=true")
    eager = dlrun(*args, "trainer.fast=false")
    assert graph.code == eager.code == 0, graph.err + eager.err
    assert "capture failed" not in (graph.run_dir / "dlrun.log").read_text()
    for (e1, s1, x), (e2, s2, y) in zip(_losses(graph), _losses(eager), strict=True):
        assert (e1, s1) == (e2, s2) and x == pytest.approx(y, rel=1e-4)


@cuda
def test_bf16_on_cuda_still_learns(dlrun) -> None:
    r = dlrun(
        *QUICK, "optimizer=adam", "optimizer.lr=0.01", "device=cuda", "trainer.precision=bf16"
    )
    assert r.code == 0, r.err
    losses = [x for _, split, x in _losses(r) if split == "train"]
    assert losses[-1] < 0.9 * losses[0]


def test_the_fast_fizzbuzz_preset_plays_perfectly(dlrun) -> None:
    r = dlrun("+experiment=fizzbuzz_fast", "seed=0", "trainer.plots=false")
    assert r.code == 0, r.err
    assert r.summary()["final"]["correct"] == 100 and "100/100 correct" in r.out
    assert r.summary()["optimizer"] == "adam"
