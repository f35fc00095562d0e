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


def curves(
    history: list[dict[str, Any]],
    objective: str,
    title: str | None = None,
    sums: tuple[str, str] | None = None,
) -> Figure:
    """Train/val loss by epoch and, beside it, the validation objective (and the learning rate,
    when a schedule moved it); ``title``: the run's name, above them all. ``sums``: the losses
    are sums over these (different) numbers of points, so each gets its own labelled scale."""
    from matplotlib.ticker import MaxNLocator

    metrics = [objective] if objective != "loss" else []
    rates = [(r["epoch"], r["lr"]) for r in history if r["split"] == "train" and "lr" in r]
    scheduled = len({lr for _, lr in rates}) > 1
    fig, axes = figure(ncols=1 + len(metrics) + scheduled)
    axes = list(axes) if metrics or scheduled else [axes]
    loss_axes = [axes[0], axes[0].twinx() if sums else axes[0]]
    drawn = []
    for i, (split, style, color) in enumerate((("train", "-", "C0"), ("val", "o-", "C1"))):
        rows = [r for r in history if r["split"] == split and r.get("loss") is not None]
        label = f"{split} (sum over {sums[i]})" if sums else split
        if rows:
            drawn += loss_axes[i].plot(
                [r["epoch"] for r in rows],
                [r["loss"] for r in rows],
                style,
                label=label,
                markersize=3,
                color=color,
            )
        if sums:
            loss_axes[i].set_ylabel(f"{split} loss (a sum: its own scale)", color=color)
        if any(r["loss"] > 0 for r in rows):
            loss_axes[i].set_yscale("log")
    axes[0].set(xlabel="epoch", title="loss")
    if not sums:
        axes[0].set_ylabel("loss")
    axes[0].legend(drawn, [line.get_label() for line in drawn])
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
