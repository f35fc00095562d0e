"""`dlrun-report`: one table for a sweep (or any set of runs), read from the run directories.

Only the record files are read (summary.json, metrics.jsonl, .hydra/), so it works while a sweep
is still going and on sweeps where jobs failed. Torch is imported only to look up the objective
of a task that no job has recorded yet. Reading the runs is
:mod:`dlrun.sweeps.report_jobs`'s, grouping them into rows :mod:`dlrun.sweeps.report_rows`'s;
this module writes the table, the CSV and the plot.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from dlrun.errors import DlrunError
from dlrun.sweeps.report_jobs import Job, collect
from dlrun.sweeps.report_rows import (
    Row,
    best_rows,
    build_rows,
    differing_keys,
    fmt,
    readable_column,
    stat_text,
    value_of,
)
from dlrun.terminal import Terminal as Console
from dlrun.terminal import ends_quietly_on_closed_pipe

PROG = "dlrun-report"


def show_table(keys: list[str], rows: list[Row], group: bool, title: str) -> None:
    from rich.table import Table

    names = {r.objective_name for r in rows}
    one = next(iter(names)) if len(names) == 1 else None
    table = Table()  # the title is a line of its own: a table's title wraps at its width
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
    columns = [readable_column([r.settings[k] for r in rows]) for k in keys]
    for i, row in enumerate(rows):
        n = len(row.jobs)
        final = stat_text(row.final, n)
        best_value = stat_text(row.best, n)
        if not one:
            final, best_value = (
                f"{row.objective_name} {final}",
                f"{row.objective_name} {best_value}",
            )
        cells = ["*" if i in best else "", *(column[i] for column in columns)]
        if group:
            cells.append(str(n))
        cells += [row.status, row.epochs, final, best_value, fmt(row.wall_s)]
        cells.append(", ".join(_job_text(j) for j in row.jobs))
        style = "bold green" if i in best else ("red" if "failed" in row.status else None)
        table.add_row(*cells, style=style)
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 0)) or 200
    console = Console(width=width, highlight=False)
    console.print(title, soft_wrap=True)
    console.print(table)


def _job_text(job: Job) -> str:
    """A job's directory name and the run's own name (``0: sine-bp lr=0.1``)."""
    return f"{job.name}: {job.summary.name}" if job.summary.name else job.name


def _direction(row: Row) -> str:
    return f"({row.objective_name}: {'higher' if row.maximize else 'lower'} is better)"


def write_csv(path: Path, keys: list[str], rows: list[Row]) -> None:
    header = [*keys, "seeds", "status", "epochs", "objective", "maximize", "final", "final_std"]
    header += ["best", "best_std", "wall_s", "best_row", "jobs", "names"]
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
                    "; ".join(j.summary.name or "" for j in row.jobs),
                ]
            )


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


def write_plot(path: Path, jobs: list[Job], keys: list[str]) -> int:
    """Validation curves of every job on one figure; returns how many jobs had a curve."""
    from dlrun import plots  # matplotlib: only for --plot

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
    for job in jobs:
        if job.status == "stale":
            print(job.resume_hint())
    if csv_path is not None:
        write_csv(csv_path, keys, rows)
        print(f"csv: {csv_path}")
    if plot is not None:
        drawn = write_plot(plot, jobs, differing_keys(jobs))
        print(f"plot: {plot} ({drawn} curves)")


@ends_quietly_on_closed_pipe
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
    except BrokenPipeError:  # ended quietly by ends_quietly_on_closed_pipe
        raise
    except (DlrunError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
