"""The run directories a report covers, each read from its records as a :class:`Job`.

Only the record files are read (through :mod:`dlrun.rundir.layout`), so this works while a sweep is
still going and on sweeps where jobs failed; a job listed in the sweep's manifest but not
started yet is a pending Job.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dlrun.errors import DlrunError
from dlrun.rundir import layout as rundir
from dlrun.rundir.layout import RunDir
from dlrun.rundir.records import REMEDY_YAML, Damaged, read_record, read_yaml
from dlrun.rundir.summary import Summary
from dlrun.sweeps import manifest as multirun

# sweep.json is derived from the job directories: losing it loses nothing
MANIFEST_REMEDY = "delete it: the report lists the job directories without it"

# a run whose summary is not final: its progress is read from metrics.jsonl
LIVE = ("running", "stale", "unknown")


@dataclass
class Job:
    """One run directory, as its records describe it."""

    path: Path
    name: str
    overrides: dict[str, str]
    summary: Summary
    rows: list[dict[str, Any]]
    config: Any = None  # .hydra/config.yaml (OmegaConf), None when absent
    choices: dict[str, Any] = field(default_factory=dict)
    status: str = "unknown"
    objective_name: str | None = None
    maximize: bool | None = None
    seed: Any = None
    checkpointed: int | None = None  # a stale run's last.pt epoch (None: none usable)

    def resume_hint(self) -> str:
        """A stale run: what it left and the command that continues it (quoted for the shell)."""
        command = "dlrun " + shlex.quote(f"resume={self.path}")
        if self.checkpointed is None:
            return f"{self.name}: stale (its process is gone) and no usable last.pt: run it again"
        return (
            f"{self.name}: stale (its process is gone, summary.json still says running); "
            f"last.pt holds epoch {self.checkpointed}; continue with: {command}"
        )

    @property
    def epochs(self) -> tuple[int | None, int | None]:
        """(epochs done, epochs planned); a running job's progress comes from metrics.jsonl."""
        done = self.summary.epochs_completed
        logged = max((r.get("epoch", 0) for r in self.rows), default=None)
        if self.status in LIVE and logged is not None:
            done = max(done or 0, logged)
        total = self.summary.epochs
        if total is None and self.config is not None:
            total = OmegaConf.select(self.config, "trainer.epochs")
        return done, total

    def val(self) -> list[tuple[int, float]]:
        name = self.objective_name
        return [
            (r["epoch"], r[name])
            for r in self.rows
            if r.get("split") == "val" and isinstance(r.get(name), int | float)
        ]

    @property
    def final(self) -> float | None:
        if self.status not in LIVE:
            return number(self.summary.objective)
        curve = self.val()
        return curve[-1][1] if curve else None

    @property
    def best(self) -> float | None:
        value = number(self.summary.best.get(self.objective_name))
        if value is not None:
            return value
        values = [v for _, v in self.val() if math.isfinite(v)]
        if not values:
            return None
        return max(values) if self.maximize else min(values)


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# ------------------------------------------------------------------ finding and reading runs


def find_runs(path: Path) -> list[Path]:
    """``path`` itself when it is a run directory, else every run directory below it."""
    if not path.is_dir():
        raise DlrunError(f"no such directory: {path}")
    if RunDir(path).is_run():
        return [path]
    found = []
    for here, dirs, _ in os.walk(path):
        dirs.sort(key=multirun.job_order)
        for d in list(dirs):
            if RunDir(Path(here) / d).is_run():
                found.append(Path(here) / d)
                dirs.remove(d)  # never descend into a run (checkpoints/, plots/, .hydra/)
    return found


def _parse(overrides: list[str]) -> dict[str, str]:
    parsed = {}
    for o in overrides:
        key, _, value = o.partition("=")
        # where a run's files live and which checkpoint it continued from say nothing of its
        # settings: a sweep job resumed on its own stays in its group
        if key.lstrip("+~").startswith("hydra.") or key.lstrip("+~") == "resume":
            continue
        parsed[key.lstrip("+~")] = "<deleted>" if key.startswith("~") else value
    return parsed


def _load_yaml(path: Path) -> Any:
    data = read_yaml(path)  # checked: a damaged record is one line naming it
    if not isinstance(data, dict):
        return None
    try:
        return OmegaConf.create(data)
    except Exception as exc:  # e.g. a YAML date or a key OmegaConf does not take
        raise Damaged(path, f"not a config ({type(exc).__name__})", REMEDY_YAML) from None


def load_job(path: Path, name: str) -> Job:
    run = RunDir(path)
    run.check_records()
    summary = run.read_summary() or Summary()
    rows = run.read_metrics()  # a line cut short while being written is left out
    overrides = _parse(run.recorded_overrides())
    hydra_cfg = _load_yaml(run.hydra_config)
    choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices") if hydra_cfg else None
    config = _load_yaml(run.config)
    job = Job(
        path=path,
        name=name,
        overrides=overrides,
        summary=summary,
        rows=rows,
        config=config,
        choices=OmegaConf.to_container(choices) if choices is not None else {},
        status=_status(run, summary),
        objective_name=summary.objective_name,
        maximize=summary.maximize,
    )
    job.seed = summary.seed if summary.seed is not None else select(config, "seed")
    if job.status == "stale" and run.last.is_file():
        from dlrun.engine import checkpoint  # imports torch: only for a run that needs the epoch

        job.checkpointed = checkpoint.saved_epoch(run.last)
    return job


def _status(run: RunDir, summary: Summary) -> str:
    """The recorded status; ``stale`` for a run recorded running whose writer is gone (no
    process holds the directory's lock: it was killed, or the machine went down)."""
    status = summary.status or "unknown"
    return "stale" if status == "running" and run.writer() is None else status


def select(config: Any, key: str) -> Any:
    if config is None:
        return None
    try:
        return OmegaConf.select(config, key)
    except Exception:
        return None


def _task(job: Job) -> str | None:
    return job.summary.task or job.choices.get("schema/task@task") or job.choices.get("task")


def fill_objectives(jobs: list[Job]) -> None:
    """Jobs that have not recorded their objective yet (running, never started) take the one
    recorded by another job of the same task, else the task's own."""
    known = {_task(j): (j.objective_name, j.maximize) for j in jobs if j.objective_name}
    for job in jobs:
        if job.objective_name:
            continue
        task = _task(job)
        if task not in known and task is not None:
            try:
                from dlrun import tasks  # imports torch: only for a task no job has recorded

                cls = tasks.task_class(task)
                known[task] = (cls.objective, cls.maximize)
            except Exception:
                known[task] = ("loss", False)
        only = set(known.values()) if len(set(known.values())) == 1 else set()
        fallback = next(iter(only)) if only else ("loss", False)  # e.g. a job not started yet
        job.objective_name, job.maximize = known.get(task, fallback) if task else fallback


def _sweep_manifest(root: Path, jobs: list[Job]) -> list[Job]:
    """Jobs listed in a sweep.json manifest that have no directory yet (not started)."""
    where = root / rundir.MANIFEST
    manifest = read_record(where, MANIFEST_REMEDY) or {}
    entries = manifest.get("jobs", [])
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("dir"), str) for e in entries
    ):
        raise Damaged(where, '"jobs" is not a list of job entries', MANIFEST_REMEDY)
    seen = {j.path.resolve() for j in jobs}
    extra = []
    for entry in entries:
        path = root / entry["dir"]  # relative to the sweep directory
        if path.exists() or path.resolve() in seen:
            continue
        extra.append(
            Job(
                path=path,
                name=_name(path, root),
                overrides=_parse([str(o) for o in _list(entry.get("overrides"))]),
                summary=Summary(),
                rows=[],
                status=str(entry.get("status") or "pending"),
            )
        )
    return extra


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve())
        return str(rel) if str(rel) != "." else path.name
    except ValueError:
        return str(path)


def collect(paths: list[Path]) -> list[Job]:
    jobs: list[Job] = []
    for root in paths:
        found = find_runs(root)
        here = [load_job(p, _name(p, root)) for p in found]
        if root.is_dir() and not RunDir(root).is_run():
            here += _sweep_manifest(root, here)
        if not here:
            raise DlrunError(
                f"no runs found in {root} (a run directory holds {rundir.SUMMARY} or "
                f"{rundir.HYDRA}/config.yaml)"
            )
        jobs += here
    if len(paths) > 1:  # job "0" of two sweeps: name them by their paths
        for job in jobs:
            job.name = _name(job.path, Path.cwd()) if job.path.is_absolute() else str(job.path)
    fill_objectives(jobs)
    return jobs
