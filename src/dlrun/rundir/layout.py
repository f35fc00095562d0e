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

import errno
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import DlrunError
from dlrun.rundir import atomic as files
from dlrun.rundir import lock as dirlock
from dlrun.rundir.lock import NAME as LOCK  # the writer's lock: who writes here now
from dlrun.rundir.records import (
    REMEDY_SUMMARY,
    REMEDY_YAML,
    Damaged,
    json_text,
    read_metrics,
    read_record,
    read_yaml,
    unquote,
    write_json,
)
from dlrun.rundir.summary import Summary

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
# the flag that lets a run directory's recorded task_file= be imported without naming it
TRUST_TASK_FILE = "--trust-task-file"
MLFLOW = "mlflow.json"  # logger=mlflow: {"tracking_uri", "run_id"}, so a resume continues it
TEMP = ".*.tmp"  # files.replace()'s temp files: left behind only by a killed writer
# all that a run refused before it started leaves in its directory
REFUSAL_RECORDS = frozenset({HYDRA, LOG, SUMMARY, LOCK})
EVAL = "eval"  # dlrun-eval's records, one JSON file per evaluation
# in a sweep directory, beside its job directories
MANIFEST = "sweep.json"  # every job, its overrides and status (dlrun.sweeps.manifest)
MLFLOW_PARENT = "mlflow-parent.json"  # logger=mlflow: the sweep's parent run, made by a job
STOP = ".stop-requested"  # written by an interrupted sweep's parent (dlrun.runs.interrupt)
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
        """The live process writing here (its pid, host, command), or None: see rundir/lock.py."""
        return dirlock.holder(self.path)

    def check_present(self) -> None:
        """Raise RunDirGone when the directory was removed or moved away while this process
        writes it (a write now would recreate a partial run directory)."""
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
        # (the caller holds the directory's writer lock: rundir/lock.py)
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
        """env.json; Damaged when not an object, or its "resumes" not a list of objects (a
        resume appends to it: read before the run's record changes)."""
        remedy = "delete it: the next resume writes a new one"
        data = read_record(self.env, remedy)
        resumes = (data or {}).get("resumes", [])
        if not isinstance(resumes, list) or not all(isinstance(r, dict) for r in resumes):
            raise Damaged(self.env, '"resumes" is not a list of objects', remedy)
        return data

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
        kept = [o for o in old if _key(o) not in given and not o.startswith("hydra.")]
        code = [unquote(o.split("=", 1)[1]) for o in kept if _key(o) == "task_file"]
        # a file that is gone runs no code: the task's name finds it installed, or says it cannot
        named = code[-1] if code and code[-1] not in ("", "null") else None
        if named and Path(named).expanduser().exists() and TRUST_TASK_FILE not in argv:
            raise DlrunError(
                f"{self.path} was made with the task file {named}; a task file's code runs "
                f"only when you name it: read it, then add {shlex.quote(f'task_file={named}')} "
                f"(or {TRUST_TASK_FILE}; task_file=null runs an installed task of that name)"
            )
        return kept


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
