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

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dlrun.config.loggers import LOGGER_EXTRAS, LoggerConfig, MLflowConfig
from dlrun.config.optimizers import (
    OPTIMIZER_SCHEMAS,
    AdamConfig,
    AdamWConfig,
    OptimizerConfig,
    RMSpropConfig,
    ScratchAdamConfig,
    ScratchMomentumConfig,
    ScratchSGDConfig,
    SGDConfig,
)
from dlrun.config.trainer import (
    MONITORS,
    PRECISIONS,
    SCHEDULER_SCHEMAS,
    CosineSchedulerConfig,
    EarlyStoppingConfig,
    ExponentialSchedulerConfig,
    GradClipConfig,
    MultiStepSchedulerConfig,
    OneCycleSchedulerConfig,
    PlateauSchedulerConfig,
    SchedulerConfig,
    StepSchedulerConfig,
    TrainerConfig,
)
from dlrun.errors import ConfigError
from dlrun.errors import check as _check

if TYPE_CHECKING:
    from dlrun.tasks import Found

check = _check  # public: a task's config validates its fields with it, in the same words

# the names this module has always offered, now defined beside it (schema_*.py)
__all__ = [
    "IMPLS",
    "LOGGER_EXTRAS",
    "MONITORS",
    "OPTIMIZER_SCHEMAS",
    "PRECISIONS",
    "SCHEDULER_SCHEMAS",
    "AdamConfig",
    "AdamWConfig",
    "Config",
    "CosineSchedulerConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "ExponentialSchedulerConfig",
    "GradClipConfig",
    "ImplTaskConfig",
    "LoggerConfig",
    "MLflowConfig",
    "MultiStepSchedulerConfig",
    "OneCycleSchedulerConfig",
    "OptimizerConfig",
    "PlateauSchedulerConfig",
    "RMSpropConfig",
    "SchedulerConfig",
    "ScratchAdamConfig",
    "ScratchMomentumConfig",
    "ScratchSGDConfig",
    "SGDConfig",
    "StepSchedulerConfig",
    "TaskConfig",
    "TrainerConfig",
    "check",
    "plain",
    "register",
    "store_task",
    "to_objects",
]


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
    # a loose task file, set by `task=./my_task.py` (dlrun.tasks.from_argv): recorded with the
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


def register() -> None:
    """Put the schemas where the YAML in conf/ finds them (idempotent): the shared ones here, and
    each task's, derived from the tasks found (dlrun.tasks)."""
    from dlrun import tasks  # the tasks' configs build on this module's bases

    cs = ConfigStore.instance()
    cs.store(name="dlrun_schema", node=Config)
    for name, schema in OPTIMIZER_SCHEMAS.items():
        cs.store(group="schema/optimizer", name=name, node=schema)
    for task in tasks.found().values():
        store_task(task)
    for scheduler in SCHEDULER_SCHEMAS:
        cs.store(group="schema/scheduler", name=scheduler.kind, node=scheduler)


def store_task(task: Found, with_yaml: bool = True) -> None:
    """A task's typed schemas (schema/task/<name>, schema/data/<name>) and, for a task whose YAML
    sits beside its module (or that has none), its `task=<name>` config with those schemas
    (``with_yaml=False``: a config dir's task/<name>.yaml that Hydra reads itself)."""
    cs = ConfigStore.instance()
    cs.store(group="schema/task", name=task.name, node=task.config)
    schemas = [{"/schema/task@task": task.name}]
    if task.data is not None:
        cs.store(group="schema/data", name=task.name, node=task.data)
        schemas.append({"/schema/data@data": task.name})
    if task.tutorial or not with_yaml:
        return  # a tutorial: its YAML is conf/task/<name>.yaml
    node = _read_task_yaml(task) if task.yaml else {}
    defaults = list(node.pop("defaults", None) or [])
    defaults = [d for d in schemas if d not in defaults] + defaults
    if "_self_" not in defaults:
        defaults.append("_self_")
    cs.store(group="task", name=task.name, node={"defaults": defaults, **node}, package="_global_")


def _read_task_yaml(task: Found) -> dict[str, Any]:
    """A task's YAML, refused before any work in one line naming its file and line: a syntax
    error (with its column), a key its schema lacks (with the keys it could be), a value of the
    wrong type (with the type expected). Hydra would say these without the file."""
    import yaml

    text = task.yaml.read_text()
    try:
        node = OmegaConf.to_container(OmegaConf.create(yaml.safe_load(text) or {}))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{mark.line + 1}:{mark.column + 1}" if mark else "1"
        what = ": ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{task.yaml}:{at}: not valid YAML: {what}") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{task.yaml}: not valid YAML: {exc}") from None
    if not isinstance(node, dict):
        raise ConfigError(f"{task.yaml}: expected a mapping of settings (task:, trainer:, ...)")
    known = {f.name: f for f in dataclasses.fields(Config)}
    sections = {"task": task.config, "data": task.data or DataConfig, "trainer": TrainerConfig}
    for key, value in node.items():
        if key not in known and key not in ("defaults", "hydra"):
            _no_such_key(task.yaml, text, [key], [*known, "defaults"])
        if key in sections and isinstance(value, dict):
            _check_section(task.yaml, text, [key], value, sections[key])
    return node


def _check_section(path: Any, text: str, keys: list[str], node: dict, kind: type) -> None:
    fields = {f.name: f for f in dataclasses.fields(kind)}
    for key, value in node.items():
        where = [*keys, str(key)]
        if key not in fields:
            _no_such_key(path, text, where, list(fields))
        inner = fields[key].default_factory
        if isinstance(value, dict) and dataclasses.is_dataclass(inner):
            _check_section(path, text, where, value, inner)
            continue
        try:
            OmegaConf.merge(OmegaConf.structured(kind), {key: value})
        except Exception:
            expected = fields[key].type
            expected = expected if isinstance(expected, str) else expected.__name__
            raise ConfigError(
                f"{yaml_line(path, text, where)}: {'.'.join(where)}={value!r} is not allowed: "
                f"expected {expected}"
            ) from None


def _no_such_key(path: Any, text: str, keys: list[str], known: list[str]) -> None:
    import difflib

    close = difflib.get_close_matches(keys[-1], known, n=3, cutoff=0.6)
    named = ".".join(keys[:-1]) or "the top level"
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(
        f"{yaml_line(path, text, keys)}: {'.'.join(keys)}: no such key; {hint}"
        f"(the keys of {named}: {', '.join(sorted(known))})"
    )


def yaml_line(path: Any, text: str, keys: list[str]) -> str:
    """``FILE:LINE`` of a key in a YAML file (the file alone when it cannot be found)."""
    import yaml

    node, line = yaml.compose(text), None
    for key in keys:
        found = [(k, v) for k, v in getattr(node, "value", []) if getattr(k, "value", None) == key]
        if not isinstance(node, yaml.MappingNode) or not found:
            return str(path)
        line, node = found[0][0].start_mark.line + 1, found[0][1]
    return f"{path}:{line}"


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
        _refuse_unknown_keys(node._get_node(key), f"{prefix}{key}.")


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
