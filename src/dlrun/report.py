"""`dlrun-report`: one table for a sweep (or any set of runs), read from the run directories.

Only the record files are read (summary.json, metrics.jsonl, .hydra/), so it works while a sweep
is still going and on sweeps where jobs failed. Torch is imported only to look up the objective
of a task that no job has recorded yet.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dlrun import cli, metrics, sweep
from dlrun.errors import DlrunError

PROG = "dlrun-report"


@dataclass
class Job:
    """One run directory, as its records describe it."""

    path: Path
    name: str
    overrides: dict[str, str]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    config: Any = None  # .hydra/config.yaml (OmegaConf), None when absent
    choices: dict[str, Any] = field(default_factory=dict)
    status: str = "unknown"
    objective_name: str | None = None
    maximize: bool | None = None
    seed: Any = None

    @property
    def epochs(self) -> tuple[int | None, int | None]:
        """(epochs done, epochs planned); a running job's progress comes from metrics.jsonl."""
        done = self.summary.get("epochs_completed")
        logged = max((r.get("epoch", 0) for r in self.rows), default=None)
        if self.status in ("running", "unknown") and logged is not None:
            done = max(done or 0, logged)
        total = self.summary.get("epochs")
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
        if self.status not in ("running", "unknown"):
            return _number(self.summary.get("objective"))
        curve = self.val()
        return curve[-1][1] if curve else None

    @property
    def best(self) -> float | None:
        value = _number((self.summary.get("best") or {}).get(self.objective_name))
        if value is not None:
            return value
        values = [v for _, v in self.val() if math.isfinite(v)]
        if not values:
            return None
        return max(values) if self.maximize else min(values)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# ------------------------------------------------------------------ finding and reading runs


def is_run_dir(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def find_runs(path: Path) -> list[Path]:
    """``path`` itself when it is a run directory, else every run directory below it."""
    if not path.is_dir():
        raise DlrunError(f"no such directory: {path}")
    if is_run_dir(path):
        return [path]
    found = []
    for here, dirs, _ in os.walk(path):
        dirs.sort(key=sweep.job_order)
        for d in list(dirs):
            if is_run_dir(Path(here) / d):
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
    try:
        return OmegaConf.load(path) if path.is_file() else None
    except Exception:  # a file cut short while being written
        return None


def load_job(path: Path, name: str) -> Job:
    summary = metrics.read_json(path / "summary.json") or {}
    rows = []
    try:
        lines = (path / "metrics.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being written right now
    try:
        overrides = _parse(cli.recorded_overrides(path))
    except Exception:
        overrides = {}
    hydra_cfg = _load_yaml(path / ".hydra" / "hydra.yaml")
    choices = OmegaConf.select(hydra_cfg, "hydra.runtime.choices") if hydra_cfg else None
    config = _load_yaml(path / ".hydra" / "config.yaml")
    job = Job(
        path=path,
        name=name,
        overrides=overrides,
        summary=summary,
        rows=rows,
        config=config,
        choices=OmegaConf.to_container(choices) if choices is not None else {},
        status=summary.get("status") or "unknown",
        objective_name=summary.get("objective_name"),
        maximize=summary.get("maximize"),
    )
    job.seed = summary.get("seed", _select(config, "seed"))
    return job


def _select(config: Any, key: str) -> Any:
    if config is None:
        return None
    try:
        return OmegaConf.select(config, key)
    except Exception:
        return None


def _task(job: Job) -> str | None:
    return job.summary.get("task") or job.choices.get("schema/task@task") or job.choices.get("task")


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
    manifest = metrics.read_json(root / sweep.MANIFEST) or {}
    seen = {j.path.resolve() for j in jobs}
    extra = []
    for entry in manifest.get("jobs", []):
        path = root / entry["dir"]  # relative to the sweep directory
        if path.exists() or path.resolve() in seen:
            continue
        extra.append(
            Job(
                path=path,
                name=_name(path, root),
                overrides=_parse(entry.get("overrides") or []),
                summary={},
                rows=[],
                status=entry.get("status") or "pending",
            )
        )
    return extra


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
        if root.is_dir() and not is_run_dir(root):
            here += _sweep_manifest(root, here)
        if not here:
            raise DlrunError(
                f"no runs found in {root} (a run directory holds summary.json or "
                ".hydra/config.yaml)"
            )
        jobs += here
    if len(paths) > 1:  # job "0" of two sweeps: name them by their paths
        for job in jobs:
            job.name = _name(job.path, Path.cwd()) if job.path.is_absolute() else str(job.path)
    fill_objectives(jobs)
    return jobs


# ------------------------------------------------------------------ rows of the report


def value_of(job: Job, key: str) -> str:
    """A setting as the job ran it: the composed config's value, the chosen config group, or
    the override as typed."""
    value = _select(job.config, key)
    if value is not None and not OmegaConf.is_config(value):
        return str(value)
    if key in job.choices and job.choices[key] is not None:
        return str(job.choices[key])
    return job.overrides.get(key, "-")


def differing_keys(jobs: list[Job]) -> list[str]:
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [k for k in keys if len({value_of(j, k) for j in jobs}) > 1]


@dataclass
class Row:
    settings: dict[str, str]
    jobs: list[Job]
    objective_name: str
    maximize: bool

    def _stats(self, values: list[float | None]) -> tuple[float | None, float | None, int]:
        have = [v for v in values if v is not None]
        if not have:
            return None, None, 0
        std = statistics.stdev(have) if len(have) > 1 else None
        return statistics.fmean(have), std, len(have)

    @property
    def final(self) -> tuple[float | None, float | None, int]:
        return self._stats([j.final for j in self.jobs])

    @property
    def best(self) -> tuple[float | None, float | None, int]:
        return self._stats([j.best for j in self.jobs])

    @property
    def status(self) -> str:
        counts = Counter(j.status for j in self.jobs)
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{n} {s}" for s, n in counts.most_common())

    @property
    def epochs(self) -> str:
        shown = []
        for job in self.jobs:
            done, total = job.epochs
            text = f"{'-' if done is None else done}/{'-' if total is None else total}"
            if text not in shown:
                shown.append(text)
        return ", ".join(shown)

    @property
    def wall_s(self) -> float | None:
        done = [j for j in self.jobs if j.status not in ("running", "unknown")]
        walls = [_number(j.summary.get("wall_s")) for j in done]  # a running job's is stale
        walls = [w for w in walls if w is not None]
        return statistics.fmean(walls) if walls else None

    @property
    def seeds(self) -> list[Any]:
        return [j.seed for j in self.jobs]

    def sort_key(self) -> tuple[int, str, float]:
        mean = self.final[0]
        if mean is None:
            return (1, self.objective_name, 0.0)
        return (0, self.objective_name, -mean if self.maximize else mean)


def build_rows(jobs: list[Job], group: bool = True) -> tuple[list[str], list[Row]]:
    """The report's columns (settings that differ) and rows, best first; seeds grouped."""
    keys = differing_keys(jobs)
    if group:
        keys = [k for k in keys if k != "seed"]
    rows: dict[tuple, Row] = {}
    for job in jobs:
        settings = {k: value_of(job, k) for k in keys}
        ident = (job.objective_name, *settings.values()) if group else (id(job),)
        if ident not in rows:
            rows[ident] = Row(settings, [], job.objective_name or "loss", bool(job.maximize))
        rows[ident].jobs.append(job)
    return keys, sorted(rows.values(), key=Row.sort_key)


def best_rows(rows: list[Row]) -> set[int]:
    """Per objective, the completed row with the best final value (rows are sorted)."""
    best: dict[str, int] = {}
    for i, row in enumerate(rows):
        if row.final[0] is not None and row.status == "completed":
            best.setdefault(row.objective_name, i)
    return set(best.values())


# ------------------------------------------------------------------ output


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"


def _stat_text(stats: tuple[float | None, float | None, int], n_jobs: int) -> str:
    mean, std, n = stats
    text = _fmt(mean)
    if std is not None:
        text += f" ± {_fmt(std)}"
    if mean is not None and n < n_jobs:
        text += f" ({n} of {n_jobs})"
    return text


def show_table(keys: list[str], rows: list[Row], group: bool, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    names = {r.objective_name for r in rows}
    one = next(iter(names)) if len(names) == 1 else None
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for key in keys:
        table.add_column(key)
    if group:
        table.add_column("seeds", justify="right")
    table.add_column("status")
    table.add_column("epochs", justify="right")
    table.add_column(f"final {one}" if one else "final", justify="right")
    table.add_column(f"best {one}" if one else "best", justify="right")
    table.add_column("wall s", justify="right")
    table.add_column("job")
    best = best_rows(rows)
    for i, row in enumerate(rows):
        n = len(row.jobs)
        final = _stat_text(row.final, n)
        best_value = _stat_text(row.best, n)
        if not one:
            final, best_value = (
                f"{row.objective_name} {final}",
                f"{row.objective_name} {best_value}",
            )
        cells = ["*" if i in best else "", *row.settings.values()]
        if group:
            cells.append(str(n))
        cells += [row.status, row.epochs, final, best_value, _fmt(row.wall_s)]
        cells.append(", ".join(j.name for j in row.jobs))
        style = "bold green" if i in best else ("red" if "failed" in row.status else None)
        table.add_row(*cells, style=style)
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 0)) or 200
    console = Console(width=width, highlight=False)
    console.print(table)


def _direction(row: Row) -> str:
    return f"({row.objective_name}: {'higher' if row.maximize else 'lower'} is better)"


def write_csv(path: Path, keys: list[str], rows: list[Row]) -> None:
    header = [*keys, "seeds", "status", "epochs", "objective", "maximize", "final", "final_std"]
    header += ["best", "best_std", "wall_s", "best_row", "jobs"]
    best = best_rows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        for i, row in enumerate(rows):
            final, best_value = row.final, row.best
            out.writerow(
                [
                    *row.settings.values(),
                    " ".join(str(s) for s in row.seeds),
                    row.status,
                    row.epochs,
                    row.objective_name,
                    row.maximize,
                    _cell(final[0]),
                    _cell(final[1]),
                    _cell(best_value[0]),
                    _cell(best_value[1]),
                    _cell(row.wall_s),
                    i in best,
                    " ".join(j.name for j in row.jobs),
                ]
            )


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


def write_plot(path: Path, jobs: list[Job], keys: list[str]) -> int:
    """Validation curves of every job on one figure; returns how many jobs had a curve."""
    from dlrun import plots

    fig, ax = plots.figure(width=8.0, height=5.0)
    drawn = 0
    names = sorted({j.objective_name for j in jobs if j.objective_name})
    positive = True
    for job in jobs:
        curve = job.val()
        if not curve:
            continue
        label = " ".join(f"{k}={value_of(job, k)}" for k in keys) or job.name
        if len(names) > 1:
            label = f"{job.objective_name}: {label}"
        ax.plot([e for e, _ in curve], [v for _, v in curve], "o-", markersize=2, label=label)
        positive = positive and all(v > 0 for _, v in curve)
        drawn += 1
    minimize = not any(j.maximize for j in jobs)
    if drawn and positive and minimize:
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel=", ".join(names), title=f"validation {', '.join(names)}")
    if drawn:
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return drawn


def report(paths: list[Path], group: bool, csv_path: Path | None, plot: Path | None) -> None:
    jobs = collect(paths)
    keys, rows = build_rows(jobs, group)
    where = str(paths[0]) if len(paths) == 1 else f"{len(paths)} directories"
    ordering = "; ".join(sorted({_direction(r) for r in rows}))
    title = f"{len(jobs)} runs in {where}, best first {ordering}; * the best completed"
    show_table(keys, rows, group, title)
    if csv_path is not None:
        write_csv(csv_path, keys, rows)
        print(f"csv: {csv_path}")
    if plot is not None:
        drawn = write_plot(plot, jobs, differing_keys(jobs))
        print(f"plot: {plot} ({drawn} curves)")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit 0, or 2 with one line for bad input."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="One table for a sweep or a set of runs: the settings that differ, status, "
        "epochs, final and best objective and wall time, best first. Runs that differ only in "
        "seed are one row (mean ± sample std).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="a multirun directory or run dirs")
    parser.add_argument("--no-group", action="store_true", help="one row per run, seeds apart")
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    parser.add_argument("--plot", type=Path, help="validation curves of all runs, as a PNG")
    args = parser.parse_args(argv)
    try:
        report(args.dirs, not args.no_group, args.csv, args.plot)
    except (DlrunError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
