"""The `dlrun` command's arguments before Hydra sees them, and Hydra's errors after: options
checked in one line, values quoted for Hydra's grammar, `resume=RUN_DIR` recomposed from the
run's own record, and multi-line messages folded into one. Used through dlrun.cli.main.

Torch-free, as dlrun.cli.main: `--help`, `--cfg job` and config errors never import torch.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from pathlib import Path
from typing import NoReturn

from hydra.errors import MissingConfigException
from omegaconf.errors import OmegaConfBaseException

from dlrun import compat, tasks
from dlrun.cli import callbacks
from dlrun.config import store
from dlrun.errors import DlrunError
from dlrun.rundir import layout as rundir
from dlrun.rundir.layout import RunDir
from dlrun.rundir.records import quote, token, unquote


def _composing(exc: BaseException) -> bool:
    """Raised by Hydra's or OmegaConf's own code (composing the command line's overrides), not
    by dlrun's run: a mistake in the command line."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.split(".")[0] in ("hydra", "omegaconf")


def check_arguments(argv: list[str]) -> None:
    """Hydra's own options, checked first so that a mistake is one line, not argparse's usage."""
    if "--version" in argv:
        return
    parser = compat.hydra_args_parser()
    if parser is None:  # this Hydra checks its own options; a used run directory is refused still
        if not {"-m", "--multirun", "-c", "--cfg", *HELP_FLAGS} & set(argv):
            _refuse_used_run_dir([a for a in argv if not a.startswith("-")])
        return

    def error(message: str) -> NoReturn:
        raise DlrunError(f"{message}; see dlrun --help (or --hydra-help for Hydra's options)")

    parser.error = error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    modes = [f"--{m.replace('_', '-')}" for m in HYDRA_MODES if getattr(args, m, None)]
    if len(modes) > 1:  # Hydra's own check is a ValueError deep in its run, not a usage line
        error(f"{' and '.join(modes)} cannot be combined (Hydra runs one of them)")
    if not (args.multirun or args.cfg or args.help or args.hydra_help):
        _refuse_used_run_dir(args.overrides)


def _refuse_used_run_dir(overrides: list[str]) -> None:
    """A new run never writes into another run's directory (Hydra would overwrite its .hydra/
    record and the metrics of both would mix): resume= continues a run."""
    if any(o.startswith("resume=") for o in overrides):
        return
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")]
    if not given:
        return
    run_dir = Path(unquote(given[-1]))
    if RunDir(run_dir).holds_run():
        raise callbacks.used(run_dir)


# overrides whose values are paths: spaces and any letters are the path's, quoted for Hydra
PATH_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "resume")
_GRAMMAR = set("[](){},=")  # Hydra's sweep and list syntax: such a value is left as typed


def hydra_quoted(argv: list[str]) -> list[str]:
    """Quote for Hydra's override grammar what it cannot lex unquoted: a value with letters
    beyond ASCII (``hydra.run.dir=ü1``), or spaces in a path (``resume=my run/x``)."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        plain = key.lstrip("+~")
        needs = any(ord(c) > 127 for c in value) or (
            plain in PATH_KEYS and any(c.isspace() for c in value)
        )
        typed = value[:1] in ("'", '"') or _GRAMMAR & set(value) or arg.startswith("-")
        out.append(f"{key}={quote(value)}" if eq and needs and not typed else arg)
    return out


HELP_FLAGS = {"--help", "-h", "--hydra-help"}
HYDRA_MODES = ("run", "multirun", "cfg", "info", "shell_completion")  # one per invocation


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages, folded into one line that names the key."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if isinstance(exc, MissingConfigException) and "Available options" in text:
        head = lines[0].split("': ", 1)[-1] if lines[0].startswith("In '") else lines[0]
        listing = text.split("Available options", 1)[1].splitlines()[1:]
        options = list(itertools.takewhile(lambda ln: ln.startswith("\t"), listing))
        return f"{head} (available: {', '.join(o.strip() for o in options)})"
    unknown = re.search(r"Could not load '([\w-]+)/([^'/]+)'", lines[0])
    if isinstance(exc, MissingConfigException) and unknown:  # in a list: logger=[jsonl,x]
        options = _options(unknown.group(1))
        if options:
            return f"{unknown.group(0)} (available: {', '.join(options)})"
    message = lines[0].rstrip(".")
    own = _own_task_yaml(text, exc)
    if own:
        return own
    group = re.match(r"Could not override '([\w/-]+)'\. No match in the defaults list", text)
    if group:  # a config group with no default (experiment) is added, not overridden
        name = group.group(1)
        return f"{message}: {name} is not chosen by default; add it with +{name}=..."
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        message += ": " + str(cause).strip().splitlines()[0]
    key = re.search(r"full_key: (\S+)", text + "\n" + str(cause or ""))
    if key and key.group(1) not in message:
        message += f" (key: {key.group(1)})"
    return message


def _own_task_yaml(text: str, exc: BaseException) -> str | None:
    """A key of a task's own YAML (beside its module) that Hydra refused while composing, e.g.
    ``optimizer.lrr`` for the optimizer chosen: the line names that file and line."""
    composing = re.match(r"In 'task/([\w.-]+)': (\w+) raised while composing", text)
    key = re.search(r"full_key: (\S+)", text + "\n" + str(exc.__cause__ or ""))
    one = tasks.found().get(composing.group(1)) if composing and tasks.is_scanned() else None
    if one is None or one.tutorial or one.yaml is None or key is None:
        return None
    where = store.yaml_line(one.yaml, one.yaml.read_text(), key.group(1).split("."))
    said = [ln.strip() for ln in text.splitlines()[1:] + str(exc.__cause__ or "").splitlines()]
    detail = [ln for ln in said if ln and not re.match(r"\w+(_key|_type)[:=]", ln)]
    what = (
        "no such key"
        if composing.group(2) == "ConfigKeyError"
        else (detail[0] if detail else composing.group(2))
    )
    return f"{where}: {key.group(1)}: {what} (the keys in effect: dlrun --cfg job)"


def _options(group: str) -> list[str]:
    """The configs dlrun ships in a group (conf/<group>/*.yaml)."""
    from importlib.resources import files

    try:
        names = [p.name for p in files("dlrun.conf").joinpath(group).iterdir()]
    except OSError:  # a group of the user's own --config-dir
        return []
    return sorted(name[:-5] for name in names if name.endswith(".yaml"))


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=RUN_DIR`: recompose the run's own overrides (then the new ones) into RUN_DIR.

    `dlrun resume=outputs/...` alone continues the run exactly as it was configured, and
    `dlrun resume=outputs/... trainer.epochs=20000` extends it. The original .hydra/ record is
    kept; this invocation's config goes to .hydra/resume-<time>/.
    """
    if "-m" in argv or "--multirun" in argv:
        return argv
    at = next((i for i, a in enumerate(argv) if a.startswith("resume=")), None)
    if at is None:
        return argv
    from dlrun.engine.checkpoint import locate  # imports torch: only for resume=

    value = unquote(argv[at].split("=", 1)[1])
    if value == rundir.LATEST and not Path(value).exists():
        latest = rundir.latest("resume=latest").path
        print(f"resume=latest: {latest} (the newest run under {rundir.OUTPUTS}/)", flush=True)
        value = str(latest)
        argv = [*argv[:at], f"resume={token(value)}", *argv[at + 1 :]]
    _, run_dir = locate(value)
    if run_dir is None:
        return argv  # a bare .pt file: this invocation's config, a new run directory
    run = RunDir(run_dir)
    run.check_records()  # a damaged record is refused before anything is written
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return [
        *argv[:at],
        *run.kept_overrides(argv),
        *argv[at:],
        f"hydra.run.dir={quote(str(run_dir))}",
        f"hydra.output_subdir={run.resume_subdir(f'{stamp}-{os.getpid()}')}",
    ]
