"""Figures a person would rather look at than read; saved as PNG under the run's plots/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def figure(ncols: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Figure, Any]:
    """A figure that needs no display (the Agg canvas), with ``ncols`` axes side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def curves(history: list[dict[str, Any]], objective: str, title: str | None = None) -> Figure:
    """Train/val loss by epoch and, beside it, the validation objective (and the learning rate,
    when a schedule moved it); ``title``: the run's name, above them all."""
    from matplotlib.ticker import MaxNLocator

    metrics = [objective] if objective != "loss" else []
    rates = [(r["epoch"], r["lr"]) for r in history if r["split"] == "train" and "lr" in r]
    scheduled = len({lr for _, lr in rates}) > 1
    fig, axes = figure(ncols=1 + len(metrics) + scheduled)
    axes = list(axes) if metrics or scheduled else [axes]
    for split, style in (("train", "-"), ("val", "o-")):
        rows = [r for r in history if r["split"] == split and r.get("loss") is not None]
        if rows:
            axes[0].plot(
                [r["epoch"] for r in rows],
                [r["loss"] for r in rows],
                style,
                label=split,
                markersize=3,
            )
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
    if any(r.get("loss", 0) and r["loss"] > 0 for r in history):
        axes[0].set_yscale("log")
    axes[0].legend()
    for ax, name in zip(axes[1 : 1 + len(metrics)], metrics, strict=True):
        rows = [r for r in history if r["split"] == "val" and r.get(name) is not None]
        ax.plot([r["epoch"] for r in rows], [r[name] for r in rows], "o-", markersize=3)
        ax.set(xlabel="epoch", ylabel=name, title=f"validation {name}")
    if scheduled:
        axes[-1].plot([e for e, _ in rates], [lr for _, lr in rates], "-")
        axes[-1].set(xlabel="epoch", ylabel="lr", title="learning rate")
    for ax in axes:  # epochs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def save(figures: dict[str, Figure], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, fig in figures.items():
        path = directory / f"{stem}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths
