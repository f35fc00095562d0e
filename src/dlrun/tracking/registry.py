"""Finding loggers: the name used in ``logger=NAME`` -> the module that holds it. Torch-free.

Every logger is found the same way, dlrun's own included: an entry point in the group
``dlrun.loggers`` of an installed distribution, named for the logger, naming its module (dlrun
declares its own in its pyproject.toml). The module holds one :class:`dlrun.tracking.loggers.Logger`
subclass (``LOGGER = ...`` names it otherwise); its YAML is ``<name>.yaml`` beside the module
(dlrun's own stay in conf/logger/), stored in Hydra's ConfigStore as the ``logger`` group's
option, so it composes like theirs. The run then builds every chosen logger here, in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from dlrun.config import loggers as logger_config
from dlrun.config import schema
from dlrun.errors import ConfigError
from dlrun.tracking.loggers import Logger, RunContext

GROUP = "dlrun.loggers"  # the entry-point group
OWN = "dlrun"  # the distribution that declares dlrun's own loggers


@dataclass(frozen=True)
class Found:
    """One logger as found: its name, class, settings, YAML and origin."""

    name: str
    logger: type[Logger]
    origin: str  # the entry point, for messages
    yaml: Path | None  # <name>.yaml beside the module (None for dlrun's own: conf/logger/)
    own: bool = False  # one of dlrun's: its extra installs what it needs

    @property
    def settings(self) -> type | None:
        return self.logger.settings

    @property
    def needs(self) -> str | None:
        return self.logger.needs

    @property
    def install(self) -> str:
        """What installs the module it needs."""
        return f"'dlrun[{self.name}]'" if self.own else str(self.needs)


_found: dict[str, Found] = {}
_schemas: dict[str, type] = {}


def config_schema() -> type[schema.Config]:
    """Config whose ``logger`` node has a field per logger found (its settings or a bool).

    The classes are this module's ``Config`` and ``LoggerConfig``, so that a composed config
    pickled to a sweep's job in another process (submitit, joblib) reads back by name: there
    they are made again, from the same loggers installed."""
    if not _schemas:
        loggers = logger_config.logger_schema(found().values())
        field = dataclasses.field(default_factory=loggers)
        whole = dataclasses.make_dataclass(
            "Config", [("logger", loggers, field)], bases=(schema.Config,)
        )
        for name, kind in (("LoggerConfig", loggers), ("Config", whole)):
            kind.__module__, kind.__qualname__ = __name__, name
            _schemas[name] = kind
    return _schemas["Config"]


def __getattr__(name: str) -> type:
    if name in ("Config", "LoggerConfig"):
        config_schema()
        return _schemas[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def found() -> dict[str, Found]:
    """Every installed logger, dlrun's own first, by name."""
    if _found:
        return _found
    eps = [(ep.dist.name if ep.dist is not None else "?", ep) for ep in entry_points(group=GROUP)]
    scanned: dict[str, Found] = {}
    for dist, ep in sorted(eps, key=lambda d_ep: (d_ep[0] != OWN, d_ep[1].name)):  # ours first
        origin = f"entry point {ep.name} = {ep.value} ({dist})"
        try:
            module = ep.load()
        except Exception as exc:
            raise ConfigError(f"{origin}: cannot be imported: {type(exc).__name__}: {exc}") from exc
        one = _check(module, origin, dist == OWN)
        if one.name != ep.name:
            raise ConfigError(
                f"{origin}: the entry point is named {ep.name} but its logger is named "
                f"{one.name} (its name): name the entry point {one.name}"
            )
        if one.name in scanned or one.name == "jsonl":
            taken = scanned[one.name].origin if one.name in scanned else "metrics.jsonl"
            raise ConfigError(f"{origin}: logger name {one.name} is taken by {taken}")
        scanned[one.name] = one
    _found.update(scanned)
    return _found


def _check(module: object, origin: str, own: bool) -> Found:
    """A logger module's one Logger subclass, or one line saying what is wrong."""
    if not isinstance(module, ModuleType):
        raise ConfigError(f"{origin}: names {module!r}, expected a logger's module")
    cls = getattr(module, "LOGGER", None)
    if cls is None:
        mine = [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, Logger) and v.__module__ == module.__name__
        ]
        if len(mine) != 1:
            raise ConfigError(
                f"{origin}: expected one subclass of dlrun.tracking.loggers.Logger, found "
                f"{len(mine)} (name it with LOGGER = ...)"
            )
        cls = mine[0]
    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise ConfigError(f"{origin}: LOGGER = {cls!r} is not a subclass of Logger")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{origin}: {cls.__name__}.name = {name!r}: expected a name like my_log")
    yaml = Path(module.__file__).parent / f"{name}.yaml" if module.__file__ and not own else None
    return Found(name, cls, origin, yaml if yaml is not None and yaml.is_file() else None, own)


def prepare(cfg: logger_config.LoggerConfig, main: bool) -> dict[str, Any]:
    """Each chosen logger's ``prepare`` when the command starts: what the run takes over."""
    early = {}
    for name, settings in logger_config.chosen(cfg).items():
        handle = found()[name].logger.prepare(settings, main)
        if handle is not None:
            early[name] = handle
    return early


def release(early: dict[str, Any]) -> None:
    """Let go what ``prepare`` started and the run did not take (it failed before its loop)."""
    for handle in early.values():
        release_it = getattr(handle, "release", None)
        if callable(release_it):
            release_it()


def open_all(
    cfg: logger_config.LoggerConfig, run: RunContext, early: dict[str, Any]
) -> list[Logger]:
    """The chosen loggers, opened for a run when its loop starts."""
    opened = []
    for name, settings in logger_config.chosen(cfg).items():
        one = found()[name].logger.open(settings, _with_early(run, early.get(name)))
        if one is not None:
            opened.append(one)
    return opened


def _with_early(run: RunContext, handle: Any) -> RunContext:
    return dataclasses.replace(run, early=handle)


def end_sweep(sweep_dir: Path, manifest: dict[str, Any], status: str | None = None) -> None:
    """After a sweep's last job: every logger ends what it made for the sweep."""
    for one in found().values():
        one.logger.end_sweep(sweep_dir, manifest, status)
