"""summary.json's :class:`Summary`: the run's outcome, and the JSON types each key may hold
(read back strictly, written in a fixed order). Used through dlrun.rundir.layout.

Torch-free: the CLI, the report and sweeps use it before (or without) importing torch.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun.rundir.records import _is_number


@dataclass
class Summary:
    """summary.json: the run's outcome, written at every change of status.

    Fields are written in this order, with these keys; ``exit_code``, ``distributed``,
    ``stopped_early`` and ``tracking_error`` only when set. A summary read back from an older or
    partial record keeps None for what it lacks.
    """

    task: str | None = None
    name: str | None = None  # the run's readable name (run_name): task and the overrides
    status: str | None = None
    epochs_completed: int | None = None
    epochs: int | None = None
    final: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    objective_name: str | None = None
    maximize: bool | None = None
    seed: int | None = None
    device: str | None = None
    optimizer: str | None = None
    wall_s: float | None = None
    error: str | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)
    overrides: list[str] | None = None
    exit_code: int | None = None
    distributed: dict[str, Any] | None = None
    # trainer.early_stopping ended the run: {epoch, best_epoch, monitor, best}
    stopped_early: dict[str, Any] | None = None
    tracking_error: str | None = None  # logger=mlflow's first failure (the run went on)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        """Known keys only (an older or newer dlrun's extra keys are kept out); a value of the
        wrong type is a ValueError naming the key."""
        values = {k: v for k, v in data.items() if k in _SUMMARY_TYPES}
        for name in ("final", "best", "resumes"):  # an older record's null: none recorded
            if values.get(name, 0) is None:
                del values[name]
        for key, value in values.items():
            kinds = _SUMMARY_TYPES[key]
            wrong = isinstance(value, bool) and bool not in kinds
            if wrong or not isinstance(value, kinds):
                raise ValueError(f'"{key}" is {json.dumps(value)[:40]}')
        if not all(isinstance(o, str) for o in values.get("overrides") or []):
            raise ValueError('"overrides" is not a list of strings')
        if not all(isinstance(r, dict) for r in values.get("resumes", [])):
            raise ValueError('"resumes" is not a list of objects')
        for name in ("final", "best"):
            if not all(_is_number(v) for v in values.get(name, {}).values()):
                raise ValueError(f'"{name}" holds a value that is not a number')
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for optional in ("exit_code", "distributed", "stopped_early", "tracking_error"):
            if data[optional] is None:
                del data[optional]
        return data

    @classmethod
    def refused(cls, overrides: list[str], exc: BaseException) -> dict[str, Any]:
        """The record of a sweep job refused before its run started (only these keys)."""
        return {
            "status": "failed",
            "error": error_line(exc),
            "exit_code": getattr(exc, "exit_code", 1),
            "overrides": overrides,
            "epochs_completed": 0,
        }

    def add_resume(self, source: Path, epoch: int, at: str) -> None:
        self.resumes.append({"from": str(source), "epoch": epoch, "at": at})

    def describe_task(self, device: str, objective_name: str, maximize: bool) -> None:
        self.device, self.objective_name, self.maximize = device, objective_name, maximize

    def record_metrics(self, final: dict[str, Any], best: dict[str, Any]) -> None:
        """The last validation row's metrics and the best epoch's; the objective follows."""
        self.final = {k: shortest(v) for k, v in final.items()}
        self.best = {k: shortest(v) for k, v in best.items()}
        final = self.final
        self.objective = final.get(self.objective_name) if self.objective_name else None

    def progress(self, status: str, epochs_completed: int, wall_s: float) -> None:
        self.status, self.epochs_completed, self.wall_s = status, epochs_completed, wall_s

    def record_ranks(self, ranks: dict[str, Any] | None) -> None:
        """Data-parallel runs: world size, backend, every rank's weights digest."""
        self.distributed = ranks

    def record_stop(self, stopped: dict[str, Any] | None) -> None:
        """Early stopping's account: the epoch it stopped at and the best epoch (None: not)."""
        self.stopped_early = stopped

    def fail(self, exc: BaseException) -> None:
        self.status, self.error = "failed", error_line(exc)
        self.exit_code = getattr(exc, "exit_code", 1)


def _json_types(hint: Any) -> tuple[type, ...]:
    """``str | None`` -> (str, NoneType); ``dict[str, Any]`` -> (dict,); a float may be an int."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = tuple(typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,)))
    return (*kinds, int) if float in kinds else kinds


# the JSON types each summary.json key may hold, from Summary's own annotations
_SUMMARY_TYPES = {k: _json_types(h) for k, h in typing.get_type_hints(Summary).items()}


def error_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def shortest(value: Any) -> Any:
    """A float32 value (a tensor's ``.item()``) at its shortest round-trip form: 0.9, not
    0.8999999761581421. Other values, float64 ones included, are returned unchanged."""
    if not isinstance(value, float) or isinstance(value, bool) or value != value:
        return value
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # beyond float32's range: a float64 value
        return value
    if single != value:
        return value
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        text = f"{value:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == value:
            return float(text)
    return value


# overrides that say where or how a run shows, not what it trains: left out of its name
_UNNAMED = ("task", "task_file", "resume", "device", "trainer.progress", "trainer.plots")
_UNNAMED_GROUPS = ("hydra", "logger")  # and every key under them
NAME_MAX = 100  # characters


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _short(value: str) -> str:
    """A value as a name shows it: a sampled float (0.021880611398582378) to 4 digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    short = f"{number:.4g}"
    return short if len(short) < len(value) and "e" not in short else value


def run_name(task: str | None, overrides: list[str], sweep: list[str] | None = None) -> str:
    """A run's name for a person: the task and the overrides that set it apart, keys shortened to
    their last part where that is unambiguous (``sine-bp lr=0.1 seed=1``). A sweep's job
    (``sweep``: the whole sweep's overrides as typed) is named by the overrides the sweep varies:
    those that are not the same for every job."""
    shared = set(sweep or [])
    chosen = []
    for override in overrides:
        key = _key(override)
        if "=" not in override or override in shared:
            continue
        if key in _UNNAMED or key.split(".")[0].split("/")[0] in _UNNAMED_GROUPS:
            continue
        chosen.append((key, _short(override.split("=", 1)[1])))
    lasts = [k.rsplit(".", 1)[-1] for k, _ in chosen]
    words = [
        f"{last if lasts.count(last) == 1 else key}={value}"
        for (key, value), last in zip(chosen, lasts, strict=True)
    ]
    name = " ".join([task or "run", *words])
    return name if len(name) <= NAME_MAX else name[: NAME_MAX - 3] + "..."
