"""Checkpoints: written atomically, read without running code.

A checkpoint holds the model, the optimizer, the epoch, every RNG state (torch, CUDA, numpy,
python and the loop's shuffling generator) and the resolved config. It is written to a temporary
file, fsynced and renamed over the old one, so a crash never leaves a half-written checkpoint in
place; it is read with ``torch.load(weights_only=True)``, so a file from elsewhere cannot run code.
A checkpoint carries a sha256 of its content (``checksum``), verified on load: flipped bits are a
damaged checkpoint, not NaN weights blamed on the learning rate. Older checkpoints have none and
load as before.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import random
import shlex
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import DlrunError
from dlrun.rundir import atomic as files
from dlrun.rundir import layout as rundir
from dlrun.rundir.layout import RunDir

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dlrun.engine.training import Training

FORMAT = "dlrun-checkpoint"
VERSION = 1


def locate(resume: str) -> tuple[Path, Path | None]:
    """``resume=`` value -> (checkpoint file, the run directory to continue in, if any).

    A run directory is continued in place; a .pt file (even one inside a run's checkpoints/)
    starts a new run from it, so the run it came from is never rewritten.
    """
    path = Path(resume).expanduser()
    try:
        path.stat()
    except FileNotFoundError:
        pass  # said below
    except OSError as exc:  # e.g. a directory on the way this user may not enter
        raise DlrunError(f"resume={resume}: cannot be read ({files.describe(exc)})") from None
    try:
        return _locate(resume, path)
    except OSError as exc:  # e.g. checkpoints/ that this user may not enter
        raise DlrunError(f"resume={resume}: cannot be read ({files.describe(exc)})") from None


def _locate(resume: str, path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        run = RunDir(path)
        if not run.last.exists():
            where = run.last.relative_to(path)
            raise DlrunError(f"resume={resume}: no {where} in that directory")
        if not run.is_run():  # e.g. what is left of a run directory removed meanwhile
            raise DlrunError(
                f"resume={resume}: not a run directory (no {rundir.HYDRA}/ record or summary); "
                f"to start a new run from its checkpoint give {shlex.quote(f'resume={run.last}')}"
            )
        return run.last, path
    if not path.exists():
        raise DlrunError(f"resume={resume}: no such file or directory")
    return path, None


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically and durably (temp file, fsync, rename), with the
    checksum of its content."""
    import torch

    path.parent.mkdir(exist_ok=True)  # checkpoints/, inside a run directory that must exist
    state = {**state, CHECKSUM: checksum(state)}
    # serialised in memory first: torch's archive writer turns a full disk into a RuntimeError
    # ("unexpected pos"), a plain write gives the OSError that says what happened
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with files.replace(path, "wb", durable=True) as f:
        f.write(buffer.getbuffer())


CHECKSUM = "checksum"
SCHEME = "sha256v2:"  # the checksum's scheme; an unprefixed one is the first (no containers)
# what dlrun writes at the top of a checkpoint: another key in one without a checksum is a
# damaged key (the checksum's own, say), not an older checkpoint
KEYS = frozenset(
    {"format", "version", "task", "epoch", "model", "optimizer", "optimizer_type", "rng"}
    | {"best", "config", "scheduler", "early_stopping", CHECKSUM}
)


def checksum(state: dict[str, Any], scheme: int = 2) -> str:
    """sha256 over every tensor's bytes, dtype and shape and every plain value, by key path
    (the stored checksum itself excluded), and (``scheme`` 2) every container's kind and
    length, so an empty one renamed, removed or retyped is damage too. Tuples and lists hash
    alike: pickling may turn one into the other, and that is no damage."""
    import torch

    digest = hashlib.sha256()

    def walk(key: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}:".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            keys = [k for k in sorted(value, key=str) if not (key == "" and k == CHECKSUM)]
            if scheme >= 2:
                digest.update(f"{key}{{{len(keys)}}};".encode())
            for k in keys:
                walk(f"{key}/{k!r}" if scheme >= 2 else f"{key}/{k}", value[k])
        elif isinstance(value, list | tuple):
            if scheme >= 2:
                digest.update(f"{key}[{len(value)}];".encode())
            for i, v in enumerate(value):
                walk(f"{key}/{i}", v)
        else:
            digest.update(f"{key}={value!r};".encode())

    walk("", state)
    return (SCHEME if scheme >= 2 else "") + digest.hexdigest()


class Damaged(DlrunError):
    """A checkpoint whose content is not what dlrun wrote (flipped bits, a cut, an edit)."""


def _verify(path: Path, state: Any) -> None:
    """Raise Damaged unless ``state`` is the content written with its checksum (one without a
    checksum, from an older dlrun, only needs dlrun's keys)."""
    if not isinstance(state, dict):
        raise DlrunError(f"checkpoint {path}: not a dlrun checkpoint")
    stored = state.get(CHECKSUM)
    if stored is None:
        unknown = sorted(str(k) for k in state if k not in KEYS)
        if unknown and state.get("format") == FORMAT:
            raise Damaged(f"checkpoint {path}: damaged (a key dlrun never writes: {unknown[0]})")
        return
    scheme = 2 if isinstance(stored, str) and stored.startswith(SCHEME) else 1
    try:
        matches = stored == checksum(state, scheme)
    except Exception:  # noqa: BLE001 - a value no checkpoint holds: damage, whatever it is
        matches = False
    if not matches:
        raise Damaged(
            f"checkpoint {path}: damaged (its content no longer matches the checksum written "
            "with it)"
        )


def saved_epoch(path: Path) -> int | None:
    """The epoch a checkpoint holds, or None when it is missing or unusable."""
    try:
        return int(load(path)["epoch"])
    except (DlrunError, KeyError, TypeError, ValueError):
        return None


def load(path: Path) -> dict[str, Any]:
    """Read a dlrun checkpoint, refusing anything else with a one-line reason."""
    import torch

    try:
        if not stat.S_ISREG(path.stat().st_mode) and not path.is_dir():  # a FIFO would block
            raise DlrunError(f"checkpoint {path}: not a regular file, expected a .pt file")
        with open(path, "rb") as f:  # unreadable is not "truncated": the file may be fine
            archive = zipfile.is_zipfile(f)  # torch.save writes a zip archive
        state = None if not archive else torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DlrunError(f"checkpoint {path}: no such file") from None
    except IsADirectoryError:
        raise DlrunError(f"checkpoint {path}: is a directory, expected a .pt file") from None
    except PermissionError:
        raise DlrunError(
            f"checkpoint {path}: not readable (permission denied); the file itself may be "
            "intact: give this user read access to it"
        ) from None
    except pickle.UnpicklingError as exc:
        reason = _reason(exc, "unpickling failed")
        raise Damaged(
            f"checkpoint {path}: refused, it holds objects other than tensors and plain data, "
            f"or it is damaged ({reason})"
        ) from None
    except OSError as exc:
        raise DlrunError(f"checkpoint {path}: cannot be read ({files.describe(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - torch's reader fails on damage in many ways
        reason = _reason(exc, type(exc).__name__)
        raise Damaged(
            f"checkpoint {path}: truncated or not a checkpoint, or damaged ({reason})"
        ) from None
    if not archive:
        raise DlrunError(f"checkpoint {path}: truncated or not a checkpoint (not a torch archive)")
    _verify(path, state)
    if state.get("format") != FORMAT:
        raise DlrunError(f"checkpoint {path}: not a dlrun checkpoint")
    if state.get("version") != VERSION:
        raise DlrunError(
            f"checkpoint {path}: format version {state.get('version')}, this dlrun reads {VERSION}"
        )
    if CHECKSUM in state:  # verified: the content is as written
        return state
    if not (isinstance(state.get("task"), str) and isinstance(state.get("epoch"), int)) or not (
        isinstance(state.get("model"), dict)
        and all(isinstance(v, torch.Tensor) for v in state["model"].values())
    ):
        raise Damaged(f"checkpoint {path}: damaged (its task, epoch or model is not as written)")
    return state


def _reason(exc: BaseException, default: str) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    told = [line for line in lines if "Unpickler error" in line]  # torch's own reason
    return (told or lines or [default])[0][:160]


def offering_other(path: Path, exc: DlrunError, command: str | None = None) -> DlrunError:
    """``exc`` about a run's checkpoint, with the other checkpoint of that run when that one is
    intact and how to go on from it: for last.pt (resume), the commands that continue from
    best.pt; else ``command`` with the other file's name in it (``{}``)."""
    names = {rundir.LAST: rundir.BEST, rundir.BEST: rundir.LAST}
    other = path.with_name(names.get(path.name, path.name))
    if other == path or not other.is_file() or (path.name == rundir.BEST and command is None):
        return exc
    try:
        epoch = load(other)["epoch"]
    except DlrunError:
        return exc
    if command is not None:
        how = command.format(other.stem)
    else:
        last, run = (shlex.quote(str(p)) for p in (path, path.parent.parent))
        how = (
            f"mv {last} {last}.damaged && cp {shlex.quote(str(other))} {last} && dlrun resume={run}"
        )
    return DlrunError(
        f"{exc}; {rundir.CHECKPOINTS}/{other.name} (epoch {epoch}) is intact: use it with: {how}"
    )


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
    training: Training, epoch: int, best: dict[str, Any] | None, config: dict[str, Any]
) -> dict[str, Any]:
    """What a checkpoint holds (``config``: the resolved config, for the record), the training
    recipe's states (``scheduler``, ``early_stopping``) among it when they are on."""
    optimizer = training.optimizer
    return {
        **{k: v.state_dict() for k, v in training.recipe().items() if v is not None},
        "format": FORMAT,
        "version": VERSION,
        "task": training.task.name,
        "epoch": epoch,
        "model": training.model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "optimizer_type": type(optimizer).__name__ if optimizer is not None else None,
        "rng": rng_state(training.generator),
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


def restore(path: Path, training: Training) -> Restored:
    """Load a checkpoint into this run's model, optimizer and RNGs, refusing one from another
    task, of another model shape, or from beyond ``trainer.epochs`` in one line.

    The training's schedule and early stopping each continue from their saved state; a
    checkpoint without one (an older run, or one without that option) starts it afresh, with a
    note."""
    try:
        return _restore(path, training)
    except Damaged as exc:
        raise offering_other(path, exc) from None


def _restore(path: Path, training: Training) -> Restored:
    state = load(path)
    try:
        return _restore_state(path, state, training)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, AssertionError) as exc:
        # past a verified checksum the content is as written: an older checkpoint's damage
        raise Damaged(
            f"checkpoint {path}: damaged ({type(exc).__name__} reading it: {_reason(exc, '')})"
        ) from None


def _restore_state(path: Path, state: dict[str, Any], training: Training) -> Restored:
    task, epochs = training.task.name, training.trainer.epochs
    model, optimizer = training.model, training.optimizer
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
    for key, part in training.recipe().items():
        if part is None:
            continue
        saved = state.get(key)
        if saved is None or part.load_state_dict(saved) is False:
            restored.notes.append(f"{key}: not in the checkpoint (or another kind); starts afresh")
    set_rng_state(state["rng"], training.generator)
    return restored
