"""The report's rows: runs grouped by the settings that differ, seeds together, best first."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from dlrun.sweeps.report_jobs import LIVE, Job, number, select


def value_of(job: Job, key: str) -> str:
    """A setting as the job ran it: the composed config's value, the chosen config group, or
    the override as typed."""
    value = select(job.config, key)
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
        done = [j for j in self.jobs if j.status not in LIVE]
        walls = [number(j.summary.wall_s) for j in done]  # a running job's is stale
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


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"


def readable_column(cells: list[str]) -> list[str]:
    """A settings column for a person: floats sampled to many digits (an Optuna-sampled
    optimizer.lr, 0.021880611398582378) shown to three significant digits (0.0219), or as many
    more as it takes to tell the column's values apart; the CSV keeps them in full."""
    numbers = {cell: _float(cell) for cell in cells}
    floats = {c: v for c, v in numbers.items() if v is not None}
    for digits in range(3, 18):
        short = {c: f"{v:.{digits}g}" for c, v in floats.items()}
        if len(set(short.values())) == len(short):
            break
    return [short[c] if c in short and len(short[c]) < len(c) else c for c in cells]


def _float(cell: str) -> float | None:
    """A cell that is a float written out (not an integer such as a seed, not a name)."""
    try:
        int(cell)
        return None
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return None


def stat_text(stats: tuple[float | None, float | None, int], n_jobs: int) -> str:
    mean, std, n = stats
    text = fmt(mean)
    if std is not None:
        text += f" ± {fmt(std)}"
    if mean is not None and n < n_jobs:
        text += f" ({n} of {n_jobs})"
    return text
