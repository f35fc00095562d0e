"""Checkpoints: written atomically, read without running code.

A checkpoint holds the model, the optimizer, the epoch, every RNG state (torch, CUDA, numpy,
python and the loop's shuffling generator) and the resolved config. It is written to a temporary
file, fsynced and renamed over the old one, so a crash never leaves a half-written checkpoint in
place; it is read with ``torch.load(weights_only=True)``, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import pickle
import random
import shlex
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun import files, rundir
from dlrun.errors import DlrunError
from dlrun.rundir import RunDir

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "dlrun-checkpoint"
VERSION = 1


def locate(resume: str) -> tuple[Path, Path | None]:
    """``resume=`` value -> (checkpoint file, the run directory to continue in, if any).

    A run directory is continued in place; a .pt file (even one inside a run's checkpoints/)
    starts a new run from it, so the run it came from is never rewritten.
    """
    path = Path(resume).expanduser()
    if path.is_dir():
        run = RunDir(path)
        if not run.last.exists():
            where = run.last.relative_to(path)
            raise DlrunError(f"resume={resume}: no {where} in that directory")
        if not run.hydra.is_dir():  # e.g. what is left of a run directory removed meanwhile
            raise DlrunError(
                f"resume={resume}: not a run directory (no {rundir.HYDRA}/ record); to start a "
                f"new run from its checkpoint give {shlex.quote(f'resume={run.last}')}"
            )
        return run.last, path
    if not path.exists():
        raise DlrunError(f"resume={resume}: no such file or directory")
    return path, None


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically and durably (temp file, fsync, rename)."""
    import torch

    path.parent.mkdir(exist_ok=True)  # checkpoints/, inside a run directory that must exist
    with files.replace(path, "wb", durable=True) as f:
        torch.save(state, f)


def saved_epoch(path: Path) -> int | None:
    """The epoch a checkpoint holds, or None when it is missing or unusable."""
    try:
        return int(load(path)["epoch"])
    except (DlrunError, KeyError, TypeError, ValueError):
        return None


def load(path: Path) -> dict[str, Any]:
    """Read a dlrun checkpoint, refusing anything else with a one-line reason."""
    import torch

    if path.is_file() and not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise DlrunError(f"checkpoint {path}: truncated or not a checkpoint (not a torch archive)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DlrunError(f"checkpoint {path}: no such file") from None
    except IsADirectoryError:
        raise DlrunError(f"checkpoint {path}: is a directory, expected a .pt file") from None
    except PermissionError:
        raise DlrunError(f"checkpoint {path}: not readable (permission denied)") from None
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling failed"
        raise DlrunError(
            f"checkpoint {path}: refused, it holds objects other than tensors and plain data "
            f"({reason[:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DlrunError(
            f"checkpoint {path}: truncated or not a checkpoint ({str(exc).splitlines()[0][:160]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DlrunError(f"checkpoint {path}: not a dlrun checkpoint")
    if state.get("version") != VERSION:
        raise DlrunError(
            f"checkpoint {path}: format version {state.get('version')}, this dlrun reads {VERSION}"
        )
    return state


def load_model(path: Path, state: dict[str, Any], model: nn.Module) -> None:
    """Load weights, or say exactly which keys or shapes differ from this run's model."""
    theirs: dict[str, Any] = state["model"]
    ours = model.state_dict()
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}"
        for k, v in ours.items()
        if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected))
        if shapes:
            parts.append("shape (checkpoint vs this run) " + "; ".join(shapes))
        raise DlrunError(f"checkpoint {path}: model differs from this run's: " + "; ".join(parts))
    model.load_state_dict(theirs)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
        "loop": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["gauss"],
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(state["loop"])


def make_state(
    task: str,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator,
    best: dict[str, Any] | None,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint holds (``config``: the resolved config, for the record; ``extra``:
    the training recipe's states, ``scheduler`` and ``early_stopping``, when they are on)."""
    return {
        **(extra or {}),
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_type": type(optimizer).__name__ if optimizer is not None else None,
        "rng": rng_state(generator),
        "best": best,
        "config": config,
    }


@dataclass
class Restored:
    """What a resume took from its checkpoint."""

    path: Path
    epoch: int
    best: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)  # for the console

    def continues(self, run_dir: RunDir) -> bool:
        """Resumed from that run directory's own last.pt (not from a .pt file elsewhere)."""
        return self.path.resolve() == run_dir.last.resolve()


def restore(
    path: Path,
    task: str,
    epochs: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator,
    recipe: dict[str, Any] | None = None,
) -> Restored:
    """Load a checkpoint into this run's model, optimizer and RNGs, refusing one from another
    task, of another model shape, or from beyond ``trainer.epochs`` in one line.

    ``recipe``: this run's schedule and early stopping by checkpoint key (``scheduler``,
    ``early_stopping``); each continues from its saved state. A checkpoint without one (an older
    run, or one without that option) starts it afresh, with a note."""
    state = load(path)
    if state["task"] != task:
        raise DlrunError(
            f"checkpoint {path}: is from task {state['task']}, this run is task {task} "
            f"(add task={state['task']})"
        )
    load_model(path, state, model)
    if int(state["epoch"]) > epochs:
        raise DlrunError(
            f"trainer.epochs={epochs} is below the checkpoint's epoch {state['epoch']} ({path}); "
            f"expected trainer.epochs >= {state['epoch']}"
        )
    restored = Restored(path, int(state["epoch"]), state.get("best"))
    if optimizer is not None:
        if state.get("optimizer") and state.get("optimizer_type") == type(optimizer).__name__:
            chosen = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            optimizer.load_state_dict(state["optimizer"])
            for group, settings in zip(optimizer.param_groups, chosen, strict=True):
                group.update(settings)  # this run's optimizer.* settings win
        else:
            restored.notes.append(
                f"optimizer changed ({state.get('optimizer_type')} -> "
                f"{type(optimizer).__name__}): its state starts fresh"
            )
    for key, part in (recipe or {}).items():
        if part is None:
            continue
        saved = state.get(key)
        if saved is None or part.load_state_dict(saved) is False:
            restored.notes.append(f"{key}: not in the checkpoint (or another kind); starts afresh")
    set_rng_state(state["rng"], generator)
    return restored
