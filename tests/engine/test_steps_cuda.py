"""The CUDA steps as a run gets them with no setting: the graph by default (against the eager and
the uncaptured fused step), each fallback named, bf16 refused for a small model, no host sync
per step. Skipped without CUDA (benchmarks/cuda_check.sh runs them: pytest -m cuda)."""

from __future__ import annotations

import pytest
import torch

from dlrun.config.optimizers import AdamConfig
from dlrun.config.trainer import TrainerConfig
from dlrun.engine import optimizers as optim
from dlrun.engine import steps
from tests.engine.test_steps import QUICK, _losses, _Toy

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _log(result) -> str:
    return (result.run_dir / "dlrun.log").read_text()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_cuda_run_is_graphed_by_default_and_trains_as_the_uncaptured_steps(
    dlrun, optimizer: str
) -> None:
    args = (*QUICK, f"optimizer={optimizer}", "device=cuda")
    auto = dlrun(*args)
    fused = dlrun(*args, "trainer.cuda_graph=false")
    eager = dlrun(*args, "trainer.fast=false")
    assert auto.code == fused.code == eager.code == 0, auto.err + fused.err + eager.err
    assert "train step: cuda_graph (" in _log(auto) and "trainer.cuda_graph=auto" in _log(auto)
    assert "capture failed" not in _log(auto)
    assert "train step: fused (" in _log(fused)
    for other, rel in ((fused, 1e-6), (eager, 1e-4)):  # the same kernels; then the textbook's
        for (e1, s1, x), (e2, s2, y) in zip(_losses(auto), _losses(other), strict=True):
            assert (e1, s1) == (e2, s2) and x == pytest.approx(y, rel=rel)


def test_a_schedule_keeps_a_cuda_run_uncaptured_and_says_why(dlrun) -> None:
    r = dlrun(*QUICK, "optimizer=adam", "device=cuda", "scheduler=cosine")
    assert r.code == 0, r.err
    log = _log(r)
    assert "trainer.cuda_graph=auto: scheduler=cosine changes the learning rate" in log
    assert "train step: fused (" in log


def test_bf16_on_a_small_model_runs_fp32_and_says_why(dlrun) -> None:
    args = (*QUICK, "optimizer=adam", "device=cuda")
    bf16 = dlrun(*args, "trainer.precision=bf16")
    fp32 = dlrun(*args)
    assert bf16.code == fp32.code == 0, bf16.err + fp32.err
    assert "trainer.precision=bf16: a step of" in _log(bf16) and "running fp32" in _log(bf16)
    assert _losses(bf16) == _losses(fp32)


@pytest.mark.parametrize("cuda_graph", [None, False])
def test_training_steps_never_wait_on_the_device(cuda_graph: bool | None) -> None:
    """torch raises on any host sync while the mode is "error": the steps after capture, and
    the stacking of their losses, run without one."""
    torch.manual_seed(0)
    cuda = torch.device("cuda")
    task = _Toy(None, None, cuda)  # type: ignore[arg-type]
    task.train_data = (torch.randn(64, 5, device=cuda), torch.randint(0, 3, (64,), device=cuda))
    model = task.build_model().to(cuda)
    opt = optim.build(AdamConfig(lr=0.01), model.parameters(), fused=True)
    step = steps.build(task, model, opt, TrainerConfig(cuda_graph=cuda_graph))
    feed = list(steps.batches(task.train_data, None, 8, True))
    for batch in feed[:3]:  # the first step creates the state; the second captures
        step(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = torch.stack([step(batch) for batch in feed])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(losses).all()
