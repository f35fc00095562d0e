"""Hydra's ConfigStore entries: the shared schemas, and each task found with its own (a task's
YAML beside its module checked line by line before Hydra reads it). Torch-free."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from dlrun.config.loggers import LoggerSchema
from dlrun.config.optimizers import OPTIMIZER_SCHEMAS
from dlrun.config.schema import Config, DataConfig
from dlrun.config.trainer import SCHEDULER_SCHEMAS, TrainerConfig
from dlrun.errors import ConfigError


class TaskSchemas(Protocol):
    """What the store takes from a task found (:class:`dlrun.tasks.Found`)."""

    name: str
    config: type
    data: type | None
    yaml: Path | None

    @property
    def tutorial(self) -> bool: ...


def register(
    found: Iterable[TaskSchemas], loggers: Iterable[LoggerYaml] = (), config: type = Config
) -> None:
    """Put the schemas where the YAML in conf/ finds them (idempotent): the shared ones here
    (``config``: Config with each logger's field, dlrun.tracking.registry's), and each task's
    and logger's YAML, derived from those found (dlrun.tasks, dlrun.tracking.registry)."""
    cs = ConfigStore.instance()
    cs.store(name="dlrun_schema", node=config)
    for one in loggers:
        if one.yaml is not None:  # dlrun's own are conf/logger/<name>.yaml
            cs.store(group="logger", name=one.name, node=_read_logger_yaml(one), package="logger")
    for name, schema in OPTIMIZER_SCHEMAS.items():
        cs.store(group="schema/optimizer", name=name, node=schema)
    for task in found:
        store_task(task)
    for scheduler in SCHEDULER_SCHEMAS:
        cs.store(group="schema/scheduler", name=scheduler.kind, node=scheduler)


class LoggerYaml(LoggerSchema, Protocol):
    """What the store takes from a logger found (:class:`dlrun.tracking.registry.Found`)."""

    yaml: Path | None


def _read_logger_yaml(one: LoggerYaml) -> dict[str, Any]:
    """A logger's YAML (its settings under ``<name>:``, as conf/logger/*.yaml), refused in
    one line naming its file when it is not a mapping."""
    import yaml

    try:
        node = yaml.safe_load(one.yaml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{one.yaml}: not valid YAML: {exc}") from None
    if not isinstance(node, dict):
        raise ConfigError(f"{one.yaml}: expected a mapping ({one.name}: ...)")
    return node


def store_task(task: TaskSchemas, with_yaml: bool = True) -> None:
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


def _read_task_yaml(task: TaskSchemas) -> dict[str, Any]:
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
