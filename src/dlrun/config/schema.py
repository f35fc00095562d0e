"""The typed config schema.

YAML in conf/ is composed on top of these dataclasses (registered in Hydra's ConfigStore), so a
misspelled key or a wrong type fails at compose time with Hydra's own message. Values that compose
but make no sense (a negative learning rate, an unknown device) are refused by ``to_objects``,
which turns the composed config into these plain dataclasses before any work starts.

This module must not import torch: config errors are answered in well under a second.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf

from dlrun import compat
from dlrun.config.loggers import LoggerConfig
from dlrun.config.trainer import (
    SchedulerConfig,
    TrainerConfig,
)
from dlrun.errors import ConfigError
from dlrun.errors import check as _check

if TYPE_CHECKING:
    pass


# --------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """Where a task finds data it does not generate itself.

    A task that reads data subclasses this (e.g. with the data set's name) and names it ``DATA``
    beside its config; it is stored under ``schema/data/<task>`` and selected in the task's YAML
    with ``- /schema/data@data: <task>``, so its keys are typed and other tasks refuse them.
    """

    root: str = "${oc.env:DLRUN_DATA,data}"


# --------------------------------------------------------------------------- tasks


@dataclass
class TaskConfig:
    """Base of every task's settings; ``name`` is the task's key in the registry."""

    name: ClassVar[str]


IMPLS = ("torch", "scratch")


@dataclass
class ImplTaskConfig(TaskConfig):
    """A task that also runs hand-written: impl=scratch trains it with explicit forward and
    backward passes (dlrun.scratch) through the same loop, instead of torch's autograd."""

    impl: str = "torch"

    def __post_init__(self) -> None:
        _check(self.impl in IMPLS, "task.impl", f"one of {', '.join(IMPLS)}", self.impl)


# --------------------------------------------------------------------------- the whole run

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class Config:
    task: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    scheduler: Any = field(default_factory=SchedulerConfig)  # a SchedulerConfig subclass
    data: Any = field(default_factory=DataConfig)  # a task's DataConfig subclass
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    device: str = "auto"
    seed: int = 0
    resume: str | None = None
    # a loose task file, set by `task=./my_task.py` (dlrun.cli.task_args.prepare): recorded with the
    # run's overrides, so that resume and rerun load the file again
    task_file: str | None = None

    def __post_init__(self) -> None:
        _check(
            bool(_DEVICE.fullmatch(self.device)),
            "device",
            "one of auto, cpu, cuda, cuda:N, mps",
            self.device,
        )
        _check(0 <= self.seed < 2**63, "seed", "an integer >= 0", self.seed)
        if isinstance(self.scheduler, SchedulerConfig):  # a test may build a Config without one
            self.scheduler.check(self.trainer)
            if self.scheduler.kind != "none" and not getattr(self.task, "uses_optimizer", True):
                raise ConfigError(
                    f"scheduler={self.scheduler.kind}: task {self.task.name} trains without an "
                    "optimizer (it stops by its own rule); use scheduler=none"
                )


def _refuse_unknown_keys(node: Any, prefix: str = "") -> None:
    """`+key=value` slips past Hydra's struct check; a typed config still has no such key."""
    if not isinstance(node, DictConfig):
        return
    kind = OmegaConf.get_type(node)
    known = {f.name for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else None
    for key in node.keys():
        if known is not None and key not in known:
            raise ConfigError(
                f"{prefix}{key}: no such key (known: {', '.join(sorted(known))}); "
                "see `dlrun --cfg job`"
            )
        _refuse_unknown_keys(compat.child_node(node, key), f"{prefix}{key}.")


def to_objects(cfg: DictConfig) -> Config:
    """Composed config -> validated plain dataclasses (raises ConfigError naming the key)."""
    _refuse_unknown_keys(cfg)
    try:
        config = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # omegaconf wraps errors raised in __post_init__
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(str(exc).splitlines()[0]) from exc
    assert isinstance(config, Config)
    return config


def plain(cfg: DictConfig) -> dict[str, Any]:
    """A resolved, plain-dict copy of the composed config (for checkpoints and logs)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container
