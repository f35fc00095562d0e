"""Without the private torch and Hydra APIs that compat.py fences, dlrun takes the public path
and still trains (and checks) the same."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dlrun import compat
from dlrun.cli.args import check_arguments
from dlrun.config.optimizers import AdamConfig, AdamWConfig, SGDConfig
from dlrun.engine import loop
from dlrun.engine import optimizers as optim
from dlrun.engine.last_good import LastGood
from dlrun.engine.steps import fused, mlp_kernel
from dlrun.errors import DlrunError, NonFiniteLoss
from dlrun.tasks.base import classification_loss
from tests.engine.test_steps import QUICK

FUSED = ("_fused_sgd_", "_fused_adam_", "_fused_adamw_")


def _without_fused_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FUSED:
        monkeypatch.delattr(torch, name)


def _losses(result) -> list[tuple[int, str, float]]:
    return [(m["epoch"], m["split"], m["loss"]) for m in result.metrics()]


@pytest.mark.parametrize(
    "cfg",
    [SGDConfig(lr=0.1, momentum=0.9), AdamConfig(lr=0.01), AdamWConfig()],
    ids=repr,
)
def test_without_fused_kernels_the_step_trains_as_torch_optim(
    monkeypatch: pytest.MonkeyPatch, cfg
) -> None:
    """Oracle: torch.optim's own step with the kernels there; ours without them."""
    torch.manual_seed(0)
    data = (torch.randn(40, 5), torch.randint(0, 3, (40,)))
    models = [nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    oracle = optim.build(cfg, models[1].parameters(), fused=True)
    assert oracle.param_groups[0]["fused"]
    theirs = []
    for i in range(5):
        batch = tuple(t[i * 8 : i * 8 + 8] for t in data)
        oracle.zero_grad(set_to_none=True)
        loss = classification_loss(models[1], batch)
        loss.backward()
        oracle.step()
        theirs.append(loss.detach())

    _without_fused_kernels(monkeypatch)
    assert not compat.has_fused_kernels()
    ours = optim.build(cfg, models[0].parameters(), fused=True)
    assert not ours.param_groups[0].get("fused")  # the public implementation instead
    assert fused.direct_update(ours) is None
    step = fused.autograd_step(lambda b: classification_loss(models[0], b), ours, None)
    losses = [step(tuple(t[i * 8 : i * 8 + 8] for t in data)) for i in range(5)]
    torch.testing.assert_close(torch.stack(losses), torch.stack(theirs))
    assert losses[-1] < losses[0]
    theirs_state = models[1].state_dict()
    for k, a in models[0].state_dict().items():
        torch.testing.assert_close(a, theirs_state[k], msg=k)


def test_a_kernel_missing_after_the_optimizer_was_built_leaves_its_step() -> None:
    model = nn.Linear(3, 2)
    sgd = optim.build(SGDConfig(), model.parameters(), fused=True)
    assert fused.direct_update(sgd) is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.delattr(torch, "_fused_sgd_")
        assert fused.direct_update(sgd) is None  # then the optimizer's own step()


def test_a_run_without_fused_kernels_matches_the_fused_run(dlrun, monkeypatch) -> None:
    """The real command, FizzBuzz with Adam (autograd: the MLP kernel needs a fused update)."""
    args = (*QUICK, "optimizer=adam", "optimizer.lr=0.01", "trainer.mlp_kernel=false")
    with_kernels = dlrun(*args)
    _without_fused_kernels(monkeypatch)
    without = dlrun(*args)
    assert with_kernels.code == without.code == 0, with_kernels.err + without.err
    log = (without.run_dir / "dlrun.log").read_text()
    assert "train step: fused (autograd.grad, then Adam.step(): not fused)" in log
    a, b = _losses(with_kernels), _losses(without)
    assert [r[:2] for r in a] == [r[:2] for r in b]
    assert b[-1][2] < b[0][2]
    for (_, _, x), (_, _, y) in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-5)


def test_adam_without_foreach_add_updates_bit_for_bit(monkeypatch) -> None:
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    ours = optim.build(AdamConfig(lr=0.01), params, fused=True)
    theirs = optim.build(AdamConfig(lr=0.01), twins, fused=True)
    update = fused.direct_update(ours)
    assert update is not None
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for t, g in zip(twins, grads, strict=True):
            t.grad = g.clone()
        theirs.step()
        with monkeypatch.context() as mp, torch.no_grad():
            mp.delattr(torch, "_foreach_add_")
            update(params, grads)
    for p, t in zip(params, twins, strict=True):
        assert torch.equal(p, t)
    assert torch.equal(ours.state[params[0]]["step"], theirs.state[twins[0]]["step"])


def test_epoch_loss_without_foreach_norm(monkeypatch) -> None:
    losses = [torch.tensor(1.0), torch.tensor(3.0)]
    params = [torch.ones(3), torch.zeros(2, 2)]
    expected = loop.epoch_loss(1, losses, [0.5, 0.5], params)
    monkeypatch.delattr(torch, "_foreach_norm")
    assert loop.epoch_loss(1, losses, [0.5, 0.5], params) == expected == 2.0
    params[1][0, 0] = math.inf  # a weight that diverged is still caught
    with pytest.raises(NonFiniteLoss):
        loop.epoch_loss(1, losses, [0.5, 0.5], params)


def test_last_good_without_foreach_copy(monkeypatch) -> None:
    monkeypatch.delattr(torch, "_foreach_copy_")
    model = nn.Linear(3, 2)
    sgd = optim.build(SGDConfig(lr=0.5, momentum=0.9), model.parameters(), fused=True)
    snapshot = LastGood(model, sgd, torch.Generator())
    for epoch in (1, 2):  # the second keep copies into the buffers made by the first
        model(torch.randn(4, 3)).sum().backward()
        sgd.step()
        snapshot.keep(epoch)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    buffer = sgd.state[model.weight]["momentum_buffer"].clone()
    with torch.no_grad():
        model.weight.fill_(math.nan)
        sgd.state[model.weight]["momentum_buffer"].fill_(math.nan)
    assert snapshot.restore() == 2
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())
    assert torch.equal(sgd.state[model.weight]["momentum_buffer"], buffer)


def test_without_torch_hook_attributes_a_model_counts_as_hooked() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert not compat.has_hooks(model) and mlp_kernel.layout(model) is not None
    del model[0]._forward_hooks
    assert compat.has_hooks(model[0]) and mlp_kernel.layout(model) is None


def test_skip_compiler_import_leaves_unwrapped_methods_alone(monkeypatch) -> None:
    def plain(self):
        return {}

    monkeypatch.setattr(torch.optim.Optimizer, "state_dict", plain)
    compat.skip_compiler_import()
    assert not hasattr(plain, "__dynamo_disable")
    assert optim.build(SGDConfig(), nn.Linear(2, 1).parameters()).state_dict() == {}


def test_without_hydras_parser_a_used_run_dir_is_still_refused(monkeypatch, tmp_path: Path):
    import hydra._internal.utils

    check_arguments([f"hydra.run.dir={tmp_path}"])
    with pytest.raises(DlrunError, match="unrecognized arguments"):
        check_arguments(["--no-such-option"])
    monkeypatch.delattr(hydra._internal.utils, "get_args_parser")
    assert compat.hydra_args_parser() is None
    check_arguments(["--no-such-option"])  # left to Hydra
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(DlrunError, match="already holds a run"):
        check_arguments([f"hydra.run.dir={tmp_path}"])
    check_arguments(["-m", f"hydra.run.dir={tmp_path}"])


def test_one_config_repository_shares_one_and_restores_hydra(monkeypatch) -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    name = "_parse_overrides_and_create_caching_repo"
    original = getattr(ConfigLoaderImpl, name)
    with compat.one_config_repository():
        assert getattr(ConfigLoaderImpl, name) is not original
    assert getattr(ConfigLoaderImpl, name) is original
    monkeypatch.delattr(ConfigLoaderImpl, name)
    with compat.one_config_repository():  # nothing to cache: Hydra as it is
        assert not hasattr(ConfigLoaderImpl, name)


def test_basic_sweeper_jobs_and_their_fallback(monkeypatch) -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(["seed=1,2", "optimizer=sgd,adam"])
    jobs = compat.basic_sweeper_jobs(overrides)
    assert jobs is not None and len(jobs) == 4
    assert {tuple(sorted(j)) for j in jobs} == {
        (f"optimizer={o}", f"seed={s}") for s in (1, 2) for o in ("sgd", "adam")
    }
    monkeypatch.delattr(BasicSweeper, "split_arguments")
    assert compat.basic_sweeper_jobs(overrides) is None


def test_unstore_drops_a_stored_config_and_tolerates_a_missing_one() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="scratchpad/inner", name="gone", node={"a": 1})
    compat.unstore("scratchpad/inner", "gone")
    assert "gone.yaml" not in cs.repo["scratchpad"]["inner"]
    compat.unstore("scratchpad/inner", "gone")  # twice: nothing to drop, no error
    compat.unstore("no/such/group", "x")


def test_child_node_keeps_a_nested_config_and_falls_back_to_reading_it() -> None:
    from omegaconf import DictConfig, OmegaConf

    cfg = OmegaConf.create({"trainer": {"epochs": 3}, "later": "${oc.env:DLRUN_NO_SUCH_VAR}"})
    assert isinstance(compat.child_node(cfg, "trainer"), DictConfig)
    assert compat.child_node(cfg, "later") is not None  # not resolved, so no error

    class Plain(dict):  # a config without omegaconf's private accessor: the public reading
        def __getitem__(self, key: str) -> object:
            if key == "later":
                raise KeyError(key)
            return super().__getitem__(key)

    plain = Plain(trainer={"epochs": 3}, later=None)
    assert compat.child_node(plain, "trainer") == {"epochs": 3}
    assert compat.child_node(plain, "later") is None
