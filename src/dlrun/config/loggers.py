"""Where the metrics rows go: the loggers' typed settings (the ``logger`` group).

The loggers are open (dlrun.tracking.registry finds them), so the ``logger`` node's schema is
made from those found: one field per logger, its settings dataclass or a bool. Torch-free, as
dlrun.config.schema: config errors are answered in well under a second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from dlrun.errors import ConfigError


class LoggerSchema(Protocol):
    """What the schema takes from a logger found (:class:`dlrun.tracking.registry.Found`)."""

    name: str

    @property
    def settings(self) -> type | None: ...

    @property
    def needs(self) -> str | None: ...

    @property
    def install(self) -> str: ...


@dataclass
class LoggerConfig:
    """Where the metrics rows go, chosen with ``logger=[jsonl,tensorboard,csv,mlflow]``.

    metrics.jsonl is always written: the summary, resume and plots read it. The loggers' own
    fields are added by :func:`logger_schema`.
    """

    jsonl: bool = True
    NEEDS: ClassVar[dict[str, tuple[str, str]]] = {}  # logger -> (module it needs, its install)

    def __post_init__(self) -> None:
        from importlib.util import find_spec

        for name in chosen(self):
            module, install = self.NEEDS.get(name, (None, ""))
            if module is not None and find_spec(module) is None:
                raise ConfigError(
                    f"logger={name} needs the {module} package, which is not installed: "
                    f"pip install {install}"
                )


def logger_schema(loggers: Iterable[LoggerSchema]) -> type[LoggerConfig]:
    """The ``logger`` node's schema: LoggerConfig with a field per logger found."""
    fields: list[tuple[str, Any, Any]] = []
    needs = {}
    for one in loggers:
        kind = one.settings
        fields.append(
            (one.name, kind, field(default_factory=kind)) if kind else (one.name, bool, False)
        )
        if one.needs:
            needs[one.name] = (one.needs, one.install)
    return dataclasses.make_dataclass(
        "LoggerConfig", fields, bases=(LoggerConfig,), namespace={"NEEDS": needs}
    )


def chosen(cfg: LoggerConfig) -> dict[str, Any]:
    """The loggers switched on, by name -> their settings (True for one without settings);
    metrics.jsonl, always written, is not one of them."""
    on = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name != "jsonl" and (value is True or getattr(value, "enabled", False) is True):
            on[f.name] = value
    return on
