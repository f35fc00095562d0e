"""What a run shows and draws: its header, its closing table and its plots.

Kept out of the run's stages so that they read as what happens, not how it is shown.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from dlrun import device as devices
from dlrun import plots as figures
from dlrun.console import Console, metrics_text
from dlrun.rundir import Summary
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


def header(
    console: Console,
    choices: dict[str, Any],
    plain: dict[str, Any],
    seed: int,
    device: torch.device,
    run_dir: Path,
) -> None:
    """The command as composed, each config group's values, and where the run writes."""
    console.print(
        f"dlrun task={choices.get('task')} optimizer={choices.get('optimizer')} "
        f"device={devices.describe(device)} seed={seed}"
    )
    for key in ("task", "optimizer", "trainer", "data"):
        console.print(f"  {key:<9} {json.dumps(plain[key], separators=(',', ':'))}", style="dim")
    console.print(f"  run dir   {run_dir}", style="dim")


def closing(
    console: Console, task: Task, model: torch.nn.Module, summary: Summary, best: dict[str, Any]
) -> None:
    """The task's own report, then the final and best value of every metric."""
    model.eval()
    with torch.no_grad():
        text = task.report(model)
    if text:
        console.print(text)
    rows = [
        (k, metrics_text({"": v}).strip(), metrics_text({"": best.get(k, "")}).strip())
        for k, v in summary.final.items()
        if k != "epoch"
    ]
    console.table(
        f"{task.name}: {summary.epochs_completed} epochs in {summary.wall_s:.1f}s "
        f"(best at epoch {best.get('epoch', '-')})",
        rows,
        ("metric", "final", "best"),
    )


def plots(
    console: Console,
    task: Task,
    model: torch.nn.Module,
    rows: list[dict[str, Any]],
    where: Path,
) -> None:
    """The learning curves and the task's figures; a plot that cannot be drawn never costs the
    run its result (a warning), a disk that cannot hold it does (resume= then finishes it)."""
    try:
        drawn = {"curves": figures.curves(rows, task.objective)}
        with torch.no_grad():
            drawn.update(task.figures(model, rows))
        figures.save(drawn, where)
    except OSError:  # a full or read-only disk is the run's failure, with what to do
        raise
    except Exception as exc:
        log.exception("plotting failed")
        console.print(f"warning: plots not written ({exc})", style="yellow")
