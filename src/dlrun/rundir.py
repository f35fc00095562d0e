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
    eval/<time>.json         each dlrun-eval of one of its checkpoints
    profile/                 trainer.profile_steps: the torch.profiler trace (Chrome format)
    mlflow.json              logger=mlflow: the MLflow run this directory is

A damaged metrics.jsonl has one policy, for every reader: a last line cut short (no newline at
its end: the row being written when the run stopped, or being written right now) is dropped
silently; any other line that is not a metrics row is a DlrunError naming the file and the line.
Every other record (summary.json, env.json, `.hydra/*.yaml`) is written whole, so any damage
to one (not JSON or YAML, a wrong type) is a :class:`Damaged` error naming the file and what to
do; :meth:`RunDir.check_records` reads them all before a command changes anything.

Torch-free: the CLI, the report and sweeps use it before (or without) importing torch.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import re
import time
import types
import typing
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
LOCK = ".dlrun.lock"  # the writer's lock (dirlock.py): who writes here now
TEMP = ".*.tmp"  # files.replace()'s temp files: left behind only by a killed writer
# all that a run refused before it started leaves in its directory
REFUSAL_RECORDS = frozenset({HYDRA, LOG, SUMMARY, LOCK})
EVAL = "eval"  # dlrun-eval's records, one JSON file per evaluation
OUTPUTS = "outputs"  # where a run's directory goes by default (conf/config.yaml, hydra.run.dir)
LATEST = "latest"  # resume=latest, dlrun-eval latest, dlrun-rerun latest: the newest run
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
    def profile_trace(self) -> Path:  # trainer.profile_steps; *.pt.trace.json: TensorBoard's name
        return self.path / "profile" / "trace.pt.trace.json"

    @property
    def metrics_csv(self) -> Path:  # logger=csv
        return self.path / "metrics.csv"

    @property
    def tensorboard(self) -> Path:  # logger=tensorboard
        return self.path / "tensorboard"

    @property
    def evals(self) -> Path:  # dlrun-eval's records
        return self.path / EVAL

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

    def writer(self) -> dict[str, Any] | None:
        """The live process writing here (its pid, host, command), or None: see dirlock.py."""
        from dlrun import dirlock

        return dirlock.holder(self.path)

    def check_present(self) -> None:
        """Raise RunDirGone when the directory was removed or moved away while this process
        writes it (a write now would recreate a partial run directory)."""
        from dlrun import dirlock

        lock = dirlock.held(self.path)
        if not (lock.intact() if lock is not None else self.path.is_dir()):
            raise RunDirGone(
                f"the run directory {self.path} was removed or moved while the run wrote it; "
                "the run stopped and wrote nothing more (its status cannot be recorded); "
                "start a new run"
            )

    def remove_stale_temps(self) -> list[Path]:
        """The temp files of a writer killed mid-write (this process holds the lock, so no
        live writer owns them); returns what was removed."""
        stale = [*self.path.glob(TEMP), *self.checkpoints.glob(TEMP)]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    # ------------------------------------------------------------------ records

    def read_summary(self) -> Summary | None:
        """summary.json, or None when absent (a run that never wrote one); Damaged when it is
        not a summary."""
        data = read_record(self.summary, REMEDY_SUMMARY)
        if data is None:
            return None
        try:
            return Summary.from_json(data)
        except (TypeError, ValueError) as exc:
            raise Damaged(self.summary, str(exc), REMEDY_SUMMARY) from None

    def write_summary(self, summary: Summary) -> None:
        """Atomically; on a full disk (no room for the temp file) rewritten in place, so the
        record still says how the run ended rather than `running` for ever."""
        try:
            write_json(self.summary, summary.to_json())
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.summary.is_file():
                raise
            files.overwrite(self.summary, json_text(summary.to_json()))

    def write_eval(self, record: dict[str, Any]) -> Path:
        """eval/<time>.json: one evaluation's record, the only file dlrun-eval writes into a run
        directory; named to the microsecond, so the names sort in time order and a second
        evaluation never overwrites the first."""
        # (the caller holds the directory's writer lock: dirlock.py)
        self.evals.mkdir(exist_ok=True)
        while True:
            now = time.time()
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
            path = self.evals / f"{stamp}-{int(now % 1 * 1e6):06d}.json"
            if not path.exists():
                break
        write_json(path, record)
        return path

    def read_metrics(self, required: bool = False) -> list[dict[str, Any]]:
        """metrics.jsonl's rows (the module docstring's policy for a damaged line); a missing
        file is no rows, or a DlrunError when ``required``."""
        return read_metrics(self.metrics, required)

    def read_env(self) -> dict[str, Any] | None:
        return read_record(self.env, "delete it: the next resume writes a new one")

    def check_records(self) -> None:
        """Read every record strictly (a Damaged error names the first damaged one): what
        resume and rerun do before they change or run anything."""
        self.read_summary()
        self.read_env()
        self.read_metrics()
        for path in sorted(self.hydra.glob("*.yaml")) + sorted(self.hydra.glob("*/*.yaml")):
            read_yaml(path)
        self.recorded_overrides()
        self.recorded_overrides(latest=False)

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

    def _overrides_record(self, latest: bool = True) -> Path:
        records = sorted(self.hydra.glob(f"{RESUME_PREFIX}*/{OVERRIDES}")) if latest else []
        return records[-1] if records else self.hydra / OVERRIDES

    def recorded_overrides(self, latest: bool = True) -> list[str]:
        """The overrides a run was last composed with: its latest resume's, else its own
        (``latest`` False: its own, as first composed)."""
        latest_record = self._overrides_record(latest)
        overrides = read_yaml(latest_record)
        if overrides is None:
            return []
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise Damaged(latest_record, "not a list of key=value overrides", REMEDY_YAML)
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        for override in overrides:
            try:
                OverridesParser.create().parse_override(override)
            except HydraException:
                reason = f"holds {override[:40]!r}, not a key=value override"
                raise Damaged(latest_record, reason, REMEDY_YAML) from None
        return overrides

    def kept_overrides(self, argv: list[str], in_place_resume: bool = True) -> list[str]:
        """The run's recorded overrides that ``argv`` does not set again (what resume and rerun
        replay before the new ones); Hydra's own settings are this invocation's. Without
        ``in_place_resume``, a resume's ``resume=`` (always this run's own directory) is left
        out; a run's own ``resume=FILE.pt`` (a new run from a checkpoint) is kept."""
        given = {_key(a) for a in argv if "=" in a and not a.startswith("-")}
        if not in_place_resume and self._overrides_record().parent != self.hydra:
            given.add("resume")
        old = self.recorded_overrides()
        return [o for o in old if _key(o) not in given and not o.startswith("hydra.")]


class Damaged(DlrunError):
    """A record file that is not what dlrun wrote: one line naming it and what to do."""

    def __init__(self, path: Path, reason: str, remedy: str) -> None:
        super().__init__(f"{path}: damaged ({reason}); {remedy}")
        self.path = path


REMEDY_SUMMARY = (
    "repair it, or delete it: the run's checkpoints and metrics are intact, and the next resume "
    "writes a new one"
)
REMEDY_YAML = "restore it from a copy or repair it by hand (Hydra wrote it as YAML)"


def read_record(path: Path, remedy: str) -> dict[str, Any] | None:
    """A JSON record that is written whole: None when absent, Damaged when not a JSON object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise Damaged(path, "not text", remedy) from None
    except OSError as exc:
        raise DlrunError(f"cannot read {files.describe(exc)}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Damaged(path, f"not JSON: {str(exc)[:80]}", remedy) from None
    if not isinstance(data, dict):
        raise Damaged(path, f"a JSON {type(data).__name__}, not an object", remedy)
    return data


def read_yaml(path: Path) -> Any:
    """One of Hydra's `.hydra/*.yaml` records as plain data: None when absent, Damaged when it
    cannot be read as YAML."""
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise Damaged(path, "not text", REMEDY_YAML) from None
    except OSError as exc:
        raise DlrunError(f"cannot read {files.describe(exc)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())[:80]
        raise Damaged(path, f"not YAML: {reason}", REMEDY_YAML) from None
    if data is None:  # Hydra writes [] or {} for nothing: an empty file was cut short
        raise Damaged(path, "empty", REMEDY_YAML)
    return data


def latest(what: str, root: Path = Path(OUTPUTS)) -> RunDir:
    """The newest run directory under ``root`` (``what``: the argument that asked, for the
    error), newest by the run's start time: when Hydra wrote its .hydra/config.yaml, once, as the
    run started (a resume records itself in .hydra/resume-*/, a sweep job in multirun/)."""
    records = sorted(root.rglob(f"{HYDRA}/config.yaml")) if root.is_dir() else []
    if not records:
        raise DlrunError(
            f"{what}: no run under {root.resolve()} (a run directory has {HYDRA}/config.yaml); "
            "run dlrun from the directory that holds outputs/, or give the run directory's path"
        )
    newest = max(records, key=lambda p: (p.stat().st_mtime_ns, str(p)))
    return RunDir(newest.parent.parent)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


class RunDirGone(DlrunError):
    """The run directory disappeared under a running run."""


def unquote(value: str) -> str:
    """A value as typed for Hydra (``'my run'`` or ``my run``) -> the plain value (the inverse
    of :func:`quote`, Hydra's rules: a backslash escapes only a quote or the string's end)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        q, inner = value[0], value[1:-1]
        inner = re.sub(r"(\\*)\\" + q, lambda m: m.group(1)[: len(m.group(1)) // 2] + q, inner)
        return re.sub(r"(\\+)$", lambda m: m.group(1)[: len(m.group(1)) // 2], inner)
    return value


def token(value: str) -> str:
    """A value as one Hydra override token, quoted only when it must be (a recorded override
    then reads as the user would have typed it)."""
    return value if re.fullmatch(r"[\w./:@+-]+", value) else quote(value)


def quote(value: str) -> str:
    """A value as one Hydra override token (a path with spaces, quotes or non-ASCII letters
    stays one value): single quotes; backslashes doubled only before a quote or at the end."""
    inner = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    inner = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, inner)
    return f"'{inner}'"


# --------------------------------------------------------------------------- summary.json


@dataclass
class Summary:
    """summary.json: the run's outcome, written at every change of status.

    Fields are written in this order, with these keys; ``exit_code``, ``distributed``,
    ``stopped_early`` and ``tracking_error`` only when set. A summary read back from an older or
    partial record keeps None for what it lacks.
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
        self.final, self.best = final, best
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
        if _is_row(row):
            rows.append(row)
        elif not (cut_short and number == len(lines)):
            raise DlrunError(
                f"{path}: line {number} is not a metrics row (damaged); repair or delete that "
                "line, or remove the file"
            )
    return rows


def _is_row(row: Any) -> bool:
    """What dlrun writes: an int epoch, a split name, numbers (null for NaN/inf)."""
    if not isinstance(row, dict) or not isinstance(row.get("split"), str):
        return False
    epoch = row.get("epoch")
    values = [v for k, v in row.items() if k != "split"]
    return isinstance(epoch, int) and not isinstance(epoch, bool) and all(map(_is_number, values))


def _is_number(value: Any) -> bool:
    """A metric's value as JSON holds it: a number, or null for NaN/inf."""
    return isinstance(value, int | float | None) and not isinstance(value, bool)


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


def json_text(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Atomically (a reader never sees half a file)."""
    with files.replace(path) as f:
        f.write(json_text(obj))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record, or None when absent or damaged (the records that are rewritten whole)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
