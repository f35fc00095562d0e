"""Config composition: the seeds' defaults, the typed schema, and value validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ValidationError

from dlrun import tasks
from dlrun.config import schema, store
from dlrun.config.optimizers import AdamConfig, AdamWConfig, RMSpropConfig, SGDConfig
from dlrun.errors import ConfigError
from dlrun.tasks.fizzbuzz import FizzBuzzConfig
from dlrun.tasks.sine_bp import SineBPConfig
from dlrun.tracking import registry

CONF = Path(__file__).resolve().parents[2] / "conf"


def objects(*overrides: str) -> schema.Config:
    store.register(tasks.found().values(), registry.found().values(), registry.config_schema())
    with initialize_config_module("dlrun.conf", version_base=None):
        return schema.to_objects(compose("config", overrides=list(overrides)))


def test_default_task_is_fizzbuzz_with_the_seed_settings() -> None:
    cfg = objects()
    assert isinstance(cfg.task, FizzBuzzConfig)
    assert (cfg.task.num_digits, cfg.task.hidden, cfg.task.train_from) == (10, 100, 101)
    assert type(cfg.optimizer) is SGDConfig and cfg.optimizer.lr == 0.05
    assert cfg.optimizer.momentum == 0
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.shuffle) == (10000, 128, True)
    assert cfg.device == "auto" and cfg.seed == 0


def test_sine_bp_has_the_seed_settings() -> None:
    cfg = objects("task=sine-bp")
    assert isinstance(cfg.task, SineBPConfig)
    assert (cfg.task.hidden, cfg.task.points, cfg.task.amplitude) == (25, 100, 20.0)
    assert cfg.task.init == "uniform"
    assert type(cfg.optimizer) is SGDConfig and cfg.optimizer.lr == 0.3
    # full-batch gradient descent, 4000 iterations
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (4000, 100)


def test_the_users_optimizer_wins_with_its_own_defaults() -> None:
    cfg = objects("optimizer=adam")
    assert type(cfg.optimizer) is AdamConfig
    assert cfg.optimizer.lr == 1e-3  # not fizzbuzz's SGD rate
    cfg = objects("optimizer=adam", "optimizer.lr=0.02", "trainer.epochs=2000", "seed=3")
    assert (cfg.optimizer.lr, cfg.trainer.epochs, cfg.seed) == (0.02, 2000, 3)
    cfg = objects("task=sine-bp", "optimizer.lr=0.1")
    assert cfg.optimizer.lr == 0.1


@pytest.mark.parametrize(
    ("name", "kind", "checks"),
    [
        ("sgd", SGDConfig, {"momentum": 0.0, "nesterov": False}),
        ("momentum", SGDConfig, {"momentum": 0.9, "nesterov": False}),
        ("adam", AdamConfig, {"lr": 1e-3}),
        ("adamw", AdamWConfig, {"lr": 1e-3}),
        ("rmsprop", RMSpropConfig, {"alpha": 0.99}),
    ],
)
def test_every_optimizer_composes_and_builds(name: str, kind: type, checks: dict) -> None:
    import torch

    from dlrun.engine import optimizers as optim

    cfg = objects(f"optimizer={name}", "optimizer.weight_decay=0.001")
    assert type(cfg.optimizer) is kind
    for key, value in checks.items():
        assert getattr(cfg.optimizer, key) == value
    opt = optim.build(cfg.optimizer, [torch.nn.Parameter(torch.zeros(3))])
    expected = {
        "sgd": "SGD",
        "momentum": "SGD",
        "adam": "Adam",
        "adamw": "AdamW",
        "rmsprop": "RMSprop",
    }[name]
    assert type(opt).__name__ == expected
    assert opt.param_groups[0]["weight_decay"] == 0.001


def test_adamw_decays_weights_by_default() -> None:
    assert objects("optimizer=adamw").optimizer.weight_decay == 0.01
    assert objects("optimizer=adam").optimizer.weight_decay == 0.0


def test_nesterov_momentum() -> None:
    cfg = objects("optimizer=momentum", "optimizer.nesterov=true")
    assert cfg.optimizer.nesterov and cfg.optimizer.momentum == 0.9


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("trainer.epochz=3", ConfigAttributeError),
        ("task.hiden=3", ConfigAttributeError),
        ("trainer.epochs=abc", ValidationError),
        ("optimizer.lr=fast", ValidationError),
        ("task=nope", MissingConfigException),
        ("optimizer=nope", MissingConfigException),
    ],
)
def test_typos_and_wrong_types_fail_at_compose_time(override: str, error: type) -> None:
    with pytest.raises((ConfigCompositionException, MissingConfigException)) as info:
        objects(override)
    assert isinstance(info.value, error) or isinstance(info.value.__cause__, error)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.epochs=-1", "trainer.epochs"),
        ("trainer.validate_every=0", "trainer.validate_every"),
        ("device=tpu", "device"),
        ("device=cuda:x", "device"),
        ("seed=-2", "seed"),
        ("task.hidden=0", "task.hidden"),
        ("optimizer.momentum=1.5", "optimizer.momentum"),
        ("optimizer.nesterov=true", "optimizer.nesterov"),
    ],
)
def test_impossible_values_are_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}="):
        objects(override)


def test_devices_that_are_well_formed_compose() -> None:
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert objects(f"device={device}").device == device


ALIASES = {"mnist": "mnist-mlp"}  # conf/task/<alias>.yaml that only includes another task's


def test_every_task_found_composes_under_its_name() -> None:
    for name in tasks.found():
        assert objects(f"task={name}").task.name == name
    for alias, name in ALIASES.items():
        assert objects(f"task={alias}") == objects(f"task={name}")


def test_the_hand_written_sgd_takes_each_tasks_settings_for_sgd() -> None:
    """A task's settings for SGD are written once and hold for its hand-written twin too."""
    for path in (CONF / "task_optimizer").glob("*_sgd.yaml"):
        task = path.stem.removesuffix("_scratch_sgd").removesuffix("_sgd")
        sgd = objects(f"task={task}", "optimizer=sgd").optimizer.lr
        assert sgd != SGDConfig().lr  # the task's own rate, not SGD's default
        assert objects(f"task={task}", "optimizer=scratch_sgd").optimizer.lr == sgd
    assert objects("optimizer=scratch_sgd", "optimizer.lr=0.2").optimizer.lr == 0.2
