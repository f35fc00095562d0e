"""The run directory: the one module that knows its file names and how each is read and written.

A run directory is dlrun's product and its contract with the user's disk: runs made by an
earlier dlrun are resumed, reported and rerun, so every reader here tolerates keys it does not
know and keys an older run did not write. The layout::

    .hydra/                  config.yaml, hydra.yaml, overrides.yaml (Hydra's record of the run)
    .hydra/resume-<time>/    the same record for each resume
    metrics.jsonl            one JSON row per logged phase of an epoch
    summary.json             the run's outcome (:class:`Summary`)
    env.json                 the software and machine it ran on (and each resume's)
    checkpoints/last.pt      the state to continue from; best.pt the best validated epoch
    plots/, dlrun.log        figures; the log (console lines and tracebacks)
    mlflow.json              logger=mlflow: the MLflow run this directory is

A damaged metrics.jsonl has one policy, for every reader: a last line cut short (no newline at
its end: the row being written when the run stopped, or being written right now) is dropped
silently; any other line that is not a JSON object is a DlrunError naming the file and the line.

Torch-free: the CLI, the report and sweeps use it before (or without) importing torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun import files
from dlrun.errors import DlrunError

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
ENV = "env.json"
LOG = "dlrun.log"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
HYDRA = ".hydra"
OVERRIDES = "overrides.yaml"
RESUME_PREFIX = "resume-"
MLFLOW = "mlflow.json"  # logger=mlflow: {"tracking_uri", "run_id"}, so a resume continues it
# what a sweep job that never reached a checkpoint clears before it starts over
RECORDS = (SUMMARY, METRICS, ENV, "plots", CHECKPOINTS)


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is created or read on construction)."""

    path: Path

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def env(self) -> Path:
        return self.path / ENV

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST

    @property
    def hydra(self) -> Path:
        return self.path / HYDRA

    @property
    def config(self) -> Path:
        return self.hydra / "config.yaml"

    @property
    def hydra_config(self) -> Path:
        return self.hydra / "hydra.yaml"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def metrics_csv(self) -> Path:  # logger=csv
        return self.path / "metrics.csv"

    @property
    def tensorboard(self) -> Path:  # logger=tensorboard
        return self.path / "tensorboard"

    @property
    def mlflow(self) -> Path:  # logger=mlflow
        return self.path / MLFLOW

    def resume_subdir(self, stamp: str) -> str:
        """Hydra's output_subdir for one resume's record (relative to the run directory)."""
        return f"{HYDRA}/{RESUME_PREFIX}{stamp}"

    @staticmethod
    def is_resume_subdir(subdir: str | None) -> bool:
        return (subdir or "").startswith(f"{HYDRA}/{RESUME_PREFIX}")

    def holds_run(self) -> bool:
        """A run has written its records here (a new run must not write into it)."""
        return self.summary.exists() or self.metrics.exists()

    def is_run(self) -> bool:
        """A run directory, finished or not (what dlrun-report lists)."""
        return self.summary.is_file() or self.config.is_file()

    def only_refusal_records(self) -> bool:
        """Nothing here but what a run refused before it started leaves (its removal is safe)."""
        return {p.name for p in self.path.iterdir()} <= {HYDRA, LOG, SUMMARY}

    # ------------------------------------------------------------------ records

    def read_summary(self) -> Summary | None:
        """summary.json, or None when absent or unreadable (a run that never wrote one)."""
        data = read_json(self.summary)
        return Summary.from_json(data) if data is not None else None

    def write_summary(self, summary: Summary) -> None:
        write_json(self.summary, summary.to_json())

    def read_metrics(self, required: bool = False) -> list[dict[str, Any]]:
        """metrics.jsonl's rows (the module docstring's policy for a damaged line); a missing
        file is no rows, or a DlrunError when ``required``."""
        return read_metrics(self.metrics, required)

    def read_env(self) -> dict[str, Any] | None:
        return read_json(self.env)

    def write_env(self, env: dict[str, Any], resumed: bool) -> None:
        """env.json: a resume keeps the original run's record and adds its own to "resumes"."""
        first = self.read_env() if resumed else None
        if first is not None:
            first.setdefault("resumes", []).append(env)
            env = first
        write_json(self.env, env)

    def device_kind(self) -> str | None:
        """'cpu', 'cuda', 'mps' as the run recorded it (summary.json, else env.json)."""
        summary = self.read_summary()
        for device in (summary.device if summary else None, (self.read_env() or {}).get("device")):
            if device:
                return str(device).split()[0].split(":")[0]
        return None

    def recorded_overrides(self, latest: bool = True) -> list[str]:
        """The overrides a run was last composed with: its latest resume's, else its own
        (``latest`` False: its own, as first composed)."""
        from omegaconf import OmegaConf

        records = sorted(self.hydra.glob(f"{RESUME_PREFIX}*/{OVERRIDES}")) if latest else []
        latest_record = records[-1] if records else self.hydra / OVERRIDES
        return [str(o) for o in OmegaConf.load(latest_record)] if latest_record.exists() else []

    def kept_overrides(self, argv: list[str]) -> list[str]:
        """The run's recorded overrides that ``argv`` does not set again (what resume and rerun
        replay before the new ones); Hydra's own settings are this invocation's."""
        given = {_key(a) for a in argv if "=" in a and not a.startswith("-")}
        old = self.recorded_overrides()
        return [o for o in old if _key(o) not in given and not o.startswith("hydra.")]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def quote(value: str) -> str:
    """A value as one Hydra override token (a path with spaces or quotes stays one value)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------- summary.json


@dataclass
class Summary:
    """summary.json: the run's outcome, written at every change of status.

    Fields are written in this order, with these keys; ``exit_code``, ``distributed`` and
    ``tracking_error`` only when set. A summary read back from an older or partial record keeps
    None for what it lacks.
    """

    task: str | None = None
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
    tracking_error: str | None = None  # logger=mlflow's first failure (the run went on)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        """Known keys only; a wrong-typed container (a hand-edited file) reads as empty."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name, kind in (("final", dict), ("best", dict), ("resumes", list)):
            if not isinstance(values.get(name, kind()), kind):
                values[name] = kind()
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for optional in ("exit_code", "distributed", "tracking_error"):
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
        self.final, self.best = final, best
        self.objective = final.get(self.objective_name) if self.objective_name else None

    def progress(self, status: str, epochs_completed: int, wall_s: float) -> None:
        self.status, self.epochs_completed, self.wall_s = status, epochs_completed, wall_s

    def record_ranks(self, ranks: dict[str, Any] | None) -> None:
        """Data-parallel runs: world size, backend, every rank's weights digest."""
        self.distributed = ranks

    def fail(self, exc: BaseException) -> None:
        self.status, self.error = "failed", error_line(exc)
        self.exit_code = getattr(exc, "exit_code", 1)


def error_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


# --------------------------------------------------------------------------- files


def read_metrics(path: Path, required: bool = False) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (see the module docstring for a damaged line)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise DlrunError(f"cannot read {path}: no such file") from None
        return []
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DlrunError(f"cannot read {path}: {reason}") from None
    lines = text.splitlines()
    cut_short = bool(lines) and not text.endswith("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
        elif not (cut_short and number == len(lines)):
            raise DlrunError(
                f"{path}: line {number} is not a metrics row (damaged); repair or delete that "
                "line, or remove the file"
            )
    return rows


def metrics_line(row: dict[str, Any]) -> str:
    """One metrics.jsonl line (NaN/inf as null: JSON has neither)."""
    return json.dumps(_clean(row)) + "\n"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than produce invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    """Atomically (a reader never sees half a file)."""
    with files.replace(path) as f:
        json.dump(_clean(obj), f, indent=2)
        f.write("\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record, or None when absent or damaged (the records that are rewritten whole)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
