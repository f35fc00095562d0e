"""Sweeps (`dlrun -m`): every job leaves a record, `sweep.json` lists them all, a re-run resumes.

Hydra's sweeper and launcher run the jobs (in this process, in local worker processes, or on a
cluster); dlrun only decides, inside each job, whether that job still has work to do, and keeps
the manifest. Everything here is torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlrun import compat
from dlrun.errors import DlrunError
from dlrun.rundir import layout as rundir
from dlrun.rundir.layout import MANIFEST, STOP, RunDir
from dlrun.rundir.lock import NAME as LOCK
from dlrun.rundir.records import read_json, write_json
from dlrun.rundir.summary import Summary

log = logging.getLogger("dlrun")


# Hydra plugins dlrun's presets use: config name -> (plugin package, dlrun extra)
PLUGINS = {
    "hydra/launcher/joblib": ("hydra-joblib-launcher", "sweep"),
    "hydra/sweeper/optuna": ("hydra-optuna-sweeper", "sweep"),
    "hydra/launcher/submitit_local": ("hydra-submitit-launcher", "slurm"),
    "hydra/launcher/submitit_slurm": ("hydra-submitit-launcher", "slurm"),
}


def missing_plugin(message: str) -> str | None:
    """Hydra says a launcher/sweeper config does not exist: name the extra that brings it."""
    for name, (package, extra) in PLUGINS.items():
        if re.search(rf"(Could not (find|load)|not found).*'{re.escape(name)}'", message):
            group, _, option = name.rpartition("/")
            return (
                f"{group}={option} needs the {package} plugin, which is not installed: "
                f"pip install 'dlrun[{extra}]'"
            )
    return None


class SweepFailed(DlrunError):
    """Some jobs failed; the others ran and are recorded."""


def sweep_overrides(sweep_dir: Path, params: dict[str, Any]) -> list[str]:
    """The whole sweep's overrides, as typed (multirun.yaml's), and its sweeper's search space
    (``hydra.sweeper.params``, e.g. an Optuna preset's), for the sweep's MLflow parent run."""
    from omegaconf import OmegaConf

    recorded = sweep_dir / "multirun.yaml"  # Hydra's basic sweeper writes it before any job
    typed = list(OmegaConf.load(recorded).hydra.overrides.task) if recorded.is_file() else []
    return [*map(str, typed), *(f"{k}={v}" for k, v in params.items())]


def planned_jobs(config: DictConfig) -> list[list[str]]:
    """The job list of Hydra's basic sweeper (the grid), in job-number order; [] for sweepers
    that choose their jobs as they go (Optuna)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        params = config.hydra.sweeper.get("params") or {}
        arguments = [f"{k}={v}" for k, v in params.items()]
        arguments += list(config.hydra.overrides.task)
        overrides = OverridesParser.create().parse_overrides(arguments)
        jobs = compat.basic_sweeper_jobs(overrides)
    except Exception:  # glob sweeps and the like need the config loader: list jobs as they run
        return []
    return jobs or []


def job_records(job_dir: Path, overrides: list[str]) -> Summary | None:
    """The summary of this job's earlier attempt; DlrunError when the directory holds another
    job (the sweep was changed but its directory reused)."""
    run = RunDir(job_dir)
    previous = run.read_summary()
    if previous is None or previous.overrides in (None, overrides):
        return previous
    if previous.resumes and run.recorded_overrides(latest=False) == overrides:
        return previous  # this sweep's job, resumed on its own since (resume=<sweep>/<job>)
    raise DlrunError(
        f"{job_dir} holds a job with other overrides ({' '.join(previous.overrides)}); "
        "expected the same sweep: give this one a new hydra.sweep.dir"
    )


def prepare_job(job_dir: Path, overrides: list[str]) -> str:
    """What this job has left to do: "skip" (completed before), "resume" (its last.pt) or "run".

    A job directory that holds another job's record (the sweep was changed but its directory
    reused) is refused rather than overwritten.
    """
    previous = job_records(job_dir, overrides)
    if previous is None:
        return "run"
    if previous.status == "completed":
        return "skip"
    if RunDir(job_dir).last.is_file():
        return "resume"
    for name in rundir.RECORDS:  # an attempt that never reached a checkpoint starts over
        path = job_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return "run"


def stop_requested(job_dir: Path, sweep_dir: Path, asked: bool = False) -> bool:
    """The sweep was interrupted (its stop file, or ``asked`` in this process) before this job
    started: it does not start. A job directory that holds nothing but Hydra's record of it is
    removed (the job stays pending)."""
    if not (asked or (sweep_dir / STOP).exists()):
        return False
    if job_dir.is_dir() and {p.name for p in job_dir.iterdir()} <= {rundir.HYDRA, rundir.LOG}:
        shutil.rmtree(job_dir, ignore_errors=True)
    return True


def end_interrupted(sweep_dir: Path) -> None:
    """After an interrupted sweep's jobs have ended: the stop file goes, and so do the idle
    worker processes a parallel launcher keeps for its next jobs."""
    (sweep_dir / STOP).unlink(missing_ok=True)
    compat.stop_idle_workers()
    # a job stopped in its first seconds, before its summary: only Hydra's record, its log and
    # lock. It never started: it is pending again, not a run that seems to be running
    from dlrun.rundir import lock as dirlock

    for job_dir in _job_dirs(sweep_dir):
        names = {p.name for p in job_dir.iterdir()}
        if names <= {rundir.HYDRA, rundir.LOG, LOCK} and dirlock.holder(job_dir) is None:
            shutil.rmtree(job_dir, ignore_errors=True)


def slurm_requeues(exc: BaseException) -> bool:
    """A job of a SLURM sweep (submitit) stopped by SIGTERM because SLURM requeues it (a
    pre-emption, ``scontrol requeue``): its result is the next attempt's, which submitit waits
    for. SLURM counts the restart before the signal; a cancelled job's count stays."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or getattr(exc, "signum", None) != signal.SIGTERM:
        return False
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", job, "-o"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    restarts = re.search(r"\bRestarts=(\d+)", shown)
    return bool(restarts) and int(restarts[1]) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def record_failure(job_dir: Path, overrides: list[str], exc: BaseException) -> None:
    """A job refused before its run started (a bad value) still gets its summary.json."""
    run = RunDir(job_dir)
    if run.summary.exists() or not job_dir.is_dir():
        return  # the run wrote its own failed record
    write_json(run.summary, Summary.refused(overrides, exc))


def objective(job_dir: Path) -> float | None:
    summary = RunDir(job_dir).read_summary()
    return summary.objective if summary else None


def job_order(name: str) -> tuple[bool, int, str]:
    """Job directories in job-number order (10 after 9), other names after them."""
    return (not name.isdigit(), int(name) if name.isdigit() else 0, name)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(dirs, key=lambda p: job_order(p.name))


def _job_entry(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    run = RunDir(job_dir)
    try:
        summary = run.read_summary()
        overrides = summary.overrides if summary else None
        if overrides is None:  # Hydra's record of the job's own overrides (not a resume's)
            overrides = run.recorded_overrides(latest=False)
    except DlrunError as exc:  # the manifest lists every job, a damaged one too
        return {
            "job": job_dir.name,
            "dir": str(job_dir.relative_to(sweep_dir)),
            "overrides": [],
            "status": "damaged",
            "error": str(exc),
        }
    return {
        "job": job_dir.name,
        "dir": str(job_dir.relative_to(sweep_dir)),
        "overrides": overrides,
        "status": (summary.status if summary else None) or "running",
        "objective": summary.objective if summary else None,
        "objective_name": summary.objective_name if summary else None,
        "epochs_completed": summary.epochs_completed if summary else None,
        "error": summary.error if summary else None,
    }


@contextlib.contextmanager
def _locked(sweep_dir: Path):
    """Jobs of a parallel launcher finish at once: one of them rewrites the manifest at a time."""
    with open(sweep_dir / ".sweep.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_manifest(sweep_dir: Path, planned: list[list[str]] | None = None) -> dict[str, Any]:
    """Rebuild the manifest from the job directories (their summaries are the truth)."""
    path = sweep_dir / MANIFEST
    with _locked(sweep_dir):
        old = read_json(path) or {}
        if planned:
            old["planned"] = [list(p) for p in planned]
        jobs = {e["job"]: e for e in (_job_entry(d, sweep_dir) for d in _job_dirs(sweep_dir))}
        for num, overrides in enumerate(old.get("planned") or []):
            jobs.setdefault(
                str(num),
                {"job": str(num), "dir": str(num), "overrides": overrides, "status": "pending"},
            )
        ordered = sorted(jobs.values(), key=lambda e: job_order(e["job"]))
        manifest = {
            "sweep_dir": str(sweep_dir),
            "counts": dict(Counter(e["status"] for e in ordered)),
            "planned": old.get("planned", []),
            "jobs": ordered,
        }
        write_json(path, manifest)
    return manifest


def discard_if_empty(sweep_dir: Path) -> None:
    """A sweep refused at compose time (before any job) leaves no directory behind."""
    if sweep_dir.is_dir() and not _job_dirs(sweep_dir):
        for name in (MANIFEST, ".sweep.lock", "multirun.yaml", LOCK):
            (sweep_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # and multirun/<date>/, multirun/ when left empty
            for path in (sweep_dir, *list(sweep_dir.parents)[:2]):
                path.rmdir()


def continue_command(argv: list[str], sweep_dir: Path) -> str:
    """The command that continues an interrupted sweep: same arguments, same sweep directory."""
    args = [a for a in argv if not a.startswith("hydra.sweep.dir=")]
    args.append(f"hydra.sweep.dir={sweep_dir}")
    return "dlrun " + " ".join(shlex.quote(a) for a in args)


def finish(sweep_dir: Path) -> str:
    """The sweep's closing line; raises SweepFailed (non-zero exit) when any job failed."""
    manifest = update_manifest(sweep_dir)
    jobs = manifest["jobs"]
    counts = manifest["counts"]
    text = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    failed = [e for e in jobs if e["status"] == "failed"]
    if failed:
        first = failed[0]
        codes = {
            getattr(RunDir(sweep_dir / e["dir"]).read_summary(), "exit_code", None) for e in failed
        }
        error = SweepFailed(
            f"{len(failed)} of {len(jobs)} jobs failed (job {first['job']}: "
            f"{' '.join(first['overrides'])}: {first['error']}); see {sweep_dir / MANIFEST}"
        )
        error.exit_code = codes.pop() if len(codes) == 1 and None not in codes else 1
        raise error
    return f"sweep: {len(jobs)} jobs ({text}); manifest {sweep_dir / MANIFEST}"
