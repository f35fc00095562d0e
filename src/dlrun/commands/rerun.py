"""`dlrun-rerun`: run a finished run again from its record into a new directory, and check that
it reproduced.

The rerun composes the run's recorded overrides (the same ones `resume=` replays) plus any new
ones; the source run directory is only read. `--verify` compares the two metrics.jsonl files
value by value, times aside: exactly on the CPU, within a relative tolerance on an accelerator
(whose kernels may sum in another order from one run to the next).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from dlrun.cli import main as cli
from dlrun.cli.args import PATH_KEYS
from dlrun.errors import DlrunError
from dlrun.rundir import atomic as files
from dlrun.rundir import layout as rundir
from dlrun.rundir.layout import RunDir
from dlrun.rundir.records import quote, unquote
from dlrun.rundir.summary import Summary
from dlrun.runs.info import REPRODUCES_ENV  # the source run, for its tracking's tags
from dlrun.terminal import ends_quietly_on_closed_pipe

PROG = "dlrun-rerun"
ACCELERATOR_RTOL = 1e-4  # relative tolerance on CUDA/MPS (and between different devices)
ACCELERATOR_ATOL = 1e-7  # for values near zero

# train-row columns a later dlrun writes on every run (the learning rate): a source recorded
# before them lacks them, and that alone is no difference
LATER_COLUMNS = frozenset({"lr"})


def _is_time(key: str) -> bool:
    return key.endswith("time_s") or key == "wall_s"


def read_metrics(run: RunDir) -> list[dict[str, Any]]:
    """metrics.jsonl's rows, times aside (rundir's policy for a damaged line)."""
    rows = run.read_metrics(required=True)
    return [{k: v for k, v in row.items() if not _is_time(k)} for row in rows]


def _same(a: Any, b: Any, rtol: float) -> bool:
    if a == b:
        return True
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return True
        return rtol > 0 and math.isclose(a, b, rel_tol=rtol, abs_tol=ACCELERATOR_ATOL)
    return False


def _row_key(row: dict) -> tuple[Any, Any]:
    return row.get("epoch"), row.get("split")


def shared_rows(source: list[dict], rerun: list[dict]) -> list[tuple[dict, dict]]:
    """The rows both logs hold (same epoch and split), in the source's order: a resumed run
    logs the epoch each part ended at, which a run in one go need not log."""
    index = {_row_key(r): r for r in rerun}
    return [(a, index[_row_key(a)]) for a in source if _row_key(a) in index]


def compare(source: list[dict], rerun: list[dict], rtol: float = 0.0) -> list[str]:
    """The differences between the rows two metrics logs share, first ones first (empty:
    reproduced); no row in common is a difference too."""
    pairs = shared_rows(source, rerun)
    if not pairs:
        return [f"no rows in common (the source has {len(source)}, the rerun {len(rerun)})"]
    line_of = {id(row): n for n, row in enumerate(source, 1)}
    problems = []
    for a, b in pairs:
        where = f"line {line_of[id(a)]} (epoch {a.get('epoch')}, {a.get('split')})"
        b = {k: v for k, v in b.items() if k in a or k not in LATER_COLUMNS}
        if a.keys() != b.keys():
            problems.append(f"{where}: keys {sorted(a)} in the source, {sorted(b)} in the rerun")
            continue
        for key in a:
            if not _same(a[key], b[key], rtol):
                problems.append(f"{where}: {key} {a[key]!r} in the source, {b[key]!r} in the rerun")
    return problems


def _new_dir(extra: list[str]) -> Path:
    given = next((a.split("=", 1)[1] for a in extra if a.startswith("hydra.run.dir=")), None)
    if given is not None:
        return Path(given.strip("'\""))
    now = time.time()
    stamp = time.strftime("%H-%M-%S-", time.localtime(now)) + f"{int(now % 1 * 1e6):06d}"
    return Path("outputs") / time.strftime("%Y-%m-%d", time.localtime(now)) / stamp


def shown(argv: list[str]) -> str:
    """A command as a shell would quote it: a path recorded in Hydra's quotes
    (``task_file='/my dir/t.py'``) is shown as typed, ``'task_file=/my dir/t.py'``, which
    dlrun quotes for Hydra again itself."""

    paths = (*PATH_KEYS, "task_file")

    def plain(arg: str) -> str:
        key, eq, value = arg.partition("=")
        return f"{key}={unquote(value)}" if eq and key.lstrip("+~") in paths else arg

    return shlex.join([plain(a) for a in argv])


def rerun(source: Path, extra: list[str], verify: bool, rtol: float | None) -> int:
    if str(source) == rundir.LATEST and not source.exists():
        source = rundir.latest(f"{PROG} latest").path
        print(f"{PROG} latest: {source} (the newest run under {rundir.OUTPUTS}/)", flush=True)
    if not source.is_dir():
        raise DlrunError(f"no such run directory: {source}")
    run = RunDir(source)
    if not run.config.is_file():
        where = run.config.relative_to(source)
        raise DlrunError(f"{source} is not a run directory (no {where})")
    run.check_records()  # the source's records, metrics.jsonl too, before anything runs
    summary = run.read_summary() or Summary()
    if verify and summary.status != "completed":
        status = summary.status or f"without {rundir.SUMMARY}"
        raise DlrunError(f"{source} is {status}: only a completed run can be verified")
    source_rows = read_metrics(run) if verify else None  # a damaged source: before any work
    new = _new_dir(extra)
    if new.exists():
        raise DlrunError(f"{new} already exists: a rerun writes a new run directory")
    # a resume's record replays `resume=` of this same run: a rerun runs it from the start
    kept = run.kept_overrides(extra, in_place_resume=False)
    args = [a for a in extra if not a.startswith("hydra.run.dir=")]
    argv = [*args, *kept, f"hydra.run.dir={quote(str(new))}"]
    print(f"rerun of {source} into {new}: {shown(['dlrun', *args, *kept])}", flush=True)
    if summary.resumes:
        print(
            f"note: {source} was resumed {len(summary.resumes)} time(s); the rerun trains "
            "it in one go with its latest settings",
            flush=True,
        )

    os.environ[REPRODUCES_ENV] = str(source.resolve())
    try:
        cli.main(argv)
    except SystemExit as exc:
        if exc.code:
            return exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.pop(REPRODUCES_ENV, None)
    if source_rows is None:
        return 0
    return check(source, new, rtol, source_rows)


def check(
    source: Path, new: Path, rtol: float | None, rows: list[dict[str, Any]] | None = None
) -> int:
    """Say whether ``new`` reproduced ``source``'s metrics.jsonl (``rows``, read already): 0 if
    so, 1 if not."""
    kinds = (RunDir(source).device_kind(), RunDir(new).device_kind())
    exact = kinds == ("cpu", "cpu")
    if rtol is None:
        rtol = 0.0 if exact else ACCELERATOR_RTOL
    how = "exactly" if rtol == 0 else f"within relative tolerance {rtol:g}"
    on = kinds[0] if kinds[0] == kinds[1] else f"{kinds[0]} (source) and {kinds[1]} (rerun)"
    rows = read_metrics(RunDir(source)) if rows is None else rows
    theirs = read_metrics(RunDir(new))
    problems = compare(rows, theirs, rtol)
    metrics = rundir.METRICS
    if not problems:
        shared = len(shared_rows(rows, theirs))
        apart = len(rows) + len(theirs) - 2 * shared
        aside = f"; {apart} row(s) logged by one run only, not compared" if apart else ""
        print(f"reproduced: {shared} rows of {metrics} match {how} on {on} (times aside{aside})")
        return 0
    print(
        f"NOT reproduced: {metrics} of {new} differs from {source} (compared {how} on {on}, "
        f"times aside): {problems[0]}"
        + (f"; {len(problems) - 1} more difference(s)" if len(problems) > 1 else "")
    )
    changed = software_changes(source, new)
    if changed and rtol == 0:
        print(
            f"note: the source ran other software ({'; '.join(changed)}): a changed train step "
            "may round differently, and training can grow the difference; compare within a "
            f"tolerance with --rtol (e.g. --rtol {ACCELERATOR_RTOL:g})"
        )
    return 1


def software_changes(source: Path, new: Path) -> list[str]:
    """What differs between the software the two runs recorded (env.json): the code's git
    commit and the versions of dlrun, torch and NumPy; "was -> is" each."""
    was, now = RunDir(source).read_env() or {}, RunDir(new).read_env() or {}

    def versions(env: dict[str, Any]) -> dict[str, Any]:
        packages = env.get("packages") or {}
        return {
            "git commit": env.get("git_commit"),
            **{name: packages.get(name) for name in ("dlrun", "torch", "numpy")},
        }

    before, after = versions(was), versions(now)
    return [
        f"{key} {before[key]} -> {after[key]}"
        for key in before
        if before[key] and after[key] and before[key] != after[key]
    ]


@ends_quietly_on_closed_pipe
def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit 0 (reproduced), 1 (not reproduced or the run failed),
    2 for bad input (one line)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} RUN_DIR|latest [--verify] [--rtol RTOL] [overrides ...]",
        description="Run a finished run again from its recorded config and overrides into a "
        f"new run directory (the source is only read); --verify compares the two {rundir.METRICS} "
        "files. Extra key=value overrides (and dlrun's flags, e.g. --config-dir) are passed on; "
        "the task file a run's records name is imported only when named again (task_file=PATH) "
        "or with --trust-task-file.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--verify", action="store_true", help=f"compare the two {rundir.METRICS}")
    parser.add_argument(
        "--rtol",
        type=float,
        help=f"relative tolerance (default: exact on the CPU, {ACCELERATOR_RTOL:g} on CUDA/MPS)",
    )
    args, extra = parser.parse_known_args(argv)
    try:
        if args.rtol is not None and not (args.rtol >= 0 and math.isfinite(args.rtol)):
            raise DlrunError(f"--rtol={args.rtol}: expected a finite number >= 0")
        code = rerun(args.run_dir, extra, args.verify, args.rtol)
    except DlrunError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a source's record this user may not read
        print(f"{PROG}: error: cannot read {files.describe(exc)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
