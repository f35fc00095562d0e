"""The hand-written optimizers follow torch.optim's trajectory, keep their state across steps
and resume from a state_dict like torch's own."""

from __future__ import annotations

import pytest
import torch

from dlrun.config.optimizers import ScratchAdamConfig, ScratchMomentumConfig, ScratchSGDConfig
from dlrun.engine import optimizers as optim
from dlrun.scratch.optim import ScratchAdam, ScratchMomentum, ScratchSGD

PAIRS = {  # name -> (hand-written, torch.optim), with the same settings
    "sgd": (
        lambda p: ScratchSGD(p, lr=0.1, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.01),
    ),
    "momentum": (
        lambda p: ScratchMomentum(p, lr=0.05, momentum=0.9, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
    ),
    "adam": (
        lambda p: ScratchAdam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01),
    ),
}


def problem() -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """A one-layer sigmoid model with MSE (seed 004's problem), float64."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = torch.rand(32, 3, generator=g, dtype=torch.float64)
    return [w, b], x, y


def train(make, steps: int, params=None, state=None):
    """Parameters after `steps` steps, the optimizer, and every parameter along the way."""
    start, x, y = problem()
    params = [p.clone().requires_grad_(True) for p in (params or start)]
    optimizer = make(params)
    if state is not None:
        optimizer.load_state_dict(state)
    path = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.mean((torch.sigmoid(x @ params[0].T + params[1]) - y) ** 2)
        loss.backward()
        optimizer.step()
        path.append([p.detach().clone() for p in params])
    return params, optimizer, path


@pytest.mark.parametrize("name", list(PAIRS))
def test_trajectory_matches_torch_optim(name: str) -> None:
    hand, reference = PAIRS[name]
    _, _, ours = train(hand, 60)
    _, _, theirs = train(reference, 60)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for p, q in zip(a, b, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=f"step {step + 1}")
    start, _, _ = problem()
    assert not torch.equal(ours[-1][0], start[0])  # it moved


@pytest.mark.parametrize("name", list(PAIRS))
def test_resume_from_state_dict_continues_the_trajectory(name: str) -> None:
    hand, _ = PAIRS[name]
    straight, _, _ = train(hand, 20)
    first, optimizer, _ = train(hand, 10)
    state = optimizer.state_dict()
    resumed, _, _ = train(hand, 10, params=[p.detach() for p in first], state=state)
    for p, q in zip(straight, resumed, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    if name == "sgd":  # nothing to carry over
        assert not state["state"]


def test_adam_moments_persist_across_steps() -> None:
    """A fresh start every step (the seed's diy_adam) would move each weight by about lr on
    every step; the real Adam keeps m, v and the step count."""
    _, optimizer, _ = train(PAIRS["adam"][0], 5)
    state = optimizer.state_dict()["state"]
    assert state[0]["step"] == 5
    assert state[0]["m"].abs().sum() > 0 and state[0]["v"].abs().sum() > 0


@pytest.mark.parametrize(
    ("cfg", "kind"),
    [
        (ScratchSGDConfig(lr=0.1), ScratchSGD),
        (ScratchMomentumConfig(lr=0.1, momentum=0.5), ScratchMomentum),
        (ScratchAdamConfig(lr=0.1, betas=[0.5, 0.9]), ScratchAdam),
    ],
)
def test_configs_build_the_hand_written_optimizers(cfg, kind) -> None:
    built = optim.build(cfg, [torch.zeros(2, requires_grad=True)])
    assert type(built) is kind
    assert built.param_groups[0]["lr"] == 0.1


def test_scratch_optimizers_from_the_command_line(dlrun) -> None:
    """optimizer=scratch_sgd gets the task's SGD learning rate; each one trains sine-bp."""
    losses = {}
    for name in ("sgd", "scratch_sgd", "scratch_momentum", "scratch_adam"):
        r = dlrun(
            "task=sine-bp", f"optimizer={name}", *("trainer.epochs=30", "trainer.log_every=1")
        )
        assert r.code == 0, r.err
        train = [m["loss"] for m in r.metrics() if m["split"] == "train"]
        assert train[-1] < train[0], name
        losses[name] = r.summary()["final"]["loss"]
    # float32, 30 steps of the seed's unstable lr 0.3: the two roundings part by ~1e-5 per step
    assert losses["scratch_sgd"] == pytest.approx(losses["sgd"], rel=1e-3)


def test_scratch_optimizer_settings_are_typed(dlrun) -> None:
    r = dlrun("optimizer=scratch_momentum", "optimizer.momentum=1.5")
    assert r.code == 2 and "optimizer.momentum=1.5 is not allowed" in r.err
    r = dlrun("optimizer=scratch_sgd", "optimizer.nesterov=true")
    assert r.code == 2 and "nesterov" in r.err
