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
import sys
import time
from pathlib import Path
from typing import Any

from dlrun import rundir
from dlrun.errors import DlrunError
from dlrun.rundir import RunDir, Summary, quote

PROG = "dlrun-rerun"
ACCELERATOR_RTOL = 1e-4  # relative tolerance on CUDA/MPS (and between different devices)
ACCELERATOR_ATOL = 1e-7  # for values near zero
# the source run directory, for the run's tracking (logger=mlflow tags the run it reproduces)
REPRODUCES_ENV = "DLRUN_REPRODUCES"


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


def compare(source: list[dict], rerun: list[dict], rtol: float = 0.0) -> list[str]:
    """The differences between two metrics logs, first ones first (empty: reproduced)."""
    problems = []
    if len(source) != len(rerun):
        problems.append(f"the source has {len(source)} rows, the rerun {len(rerun)}")
    for line, (a, b) in enumerate(zip(source, rerun, strict=False), 1):
        where = f"line {line} (epoch {a.get('epoch')}, {a.get('split')})"
        if a.keys() != b.keys():
            problems.append(f"{where}: keys {sorted(a)} in the source, {sorted(b)} in the rerun")
            continue
        for key in a:
            if not _same(a[key], b[key], rtol):
                problems.append(f"{where}: {key} {a[key]!r} in the source, {b[key]!r} in the rerun")
    return problems


def _continued_in_place(override: str) -> bool:
    """`resume=RUN_DIR` continued that same run: a rerun runs it from the start instead."""
    key, _, value = override.partition("=")
    return key.lstrip("+") == "resume" and value not in ("", "null") and Path(value).is_dir()


def _new_dir(extra: list[str]) -> Path:
    given = next((a.split("=", 1)[1] for a in extra if a.startswith("hydra.run.dir=")), None)
    if given is not None:
        return Path(given.strip("'\""))
    now = time.time()
    stamp = time.strftime("%H-%M-%S-", time.localtime(now)) + f"{int(now % 1 * 1e6):06d}"
    return Path("outputs") / time.strftime("%Y-%m-%d", time.localtime(now)) / stamp


def rerun(source: Path, extra: list[str], verify: bool, rtol: float | None) -> int:
    if not source.is_dir():
        raise DlrunError(f"no such run directory: {source}")
    run = RunDir(source)
    if not run.config.is_file():
        where = run.config.relative_to(source)
        raise DlrunError(f"{source} is not a run directory (no {where})")
    summary = run.read_summary() or Summary()
    if verify and summary.status != "completed":
        status = summary.status or f"without {rundir.SUMMARY}"
        raise DlrunError(f"{source} is {status}: only a completed run can be verified")
    new = _new_dir(extra)
    if new.exists():
        raise DlrunError(f"{new} already exists: a rerun writes a new run directory")
    kept = [o for o in run.kept_overrides(extra) if not _continued_in_place(o)]
    args = [a for a in extra if not a.startswith("hydra.run.dir=")]
    argv = [*args, *kept, f"hydra.run.dir={quote(str(new))}"]
    print(f"rerun of {source} into {new}: dlrun {' '.join([*args, *kept])}", flush=True)
    if summary.resumes:
        print(
            f"note: {source} was resumed {len(summary.resumes)} time(s); the rerun trains "
            "it in one go with its latest settings",
            flush=True,
        )
    from dlrun import cli  # the `dlrun` command itself, run in this process

    os.environ[REPRODUCES_ENV] = str(source.resolve())
    try:
        cli.main(argv)
    except SystemExit as exc:
        if exc.code:
            return exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.pop(REPRODUCES_ENV, None)
    if not verify:
        return 0
    return check(source, new, rtol)


def check(source: Path, new: Path, rtol: float | None) -> int:
    """Say whether ``new`` reproduced ``source``'s metrics.jsonl: 0 if so, 1 if not."""
    kinds = (RunDir(source).device_kind(), RunDir(new).device_kind())
    exact = kinds == ("cpu", "cpu")
    if rtol is None:
        rtol = 0.0 if exact else ACCELERATOR_RTOL
    how = "exactly" if rtol == 0 else f"within relative tolerance {rtol:g}"
    on = kinds[0] if kinds[0] == kinds[1] else f"{kinds[0]} (source) and {kinds[1]} (rerun)"
    rows = read_metrics(RunDir(source))
    problems = compare(rows, read_metrics(RunDir(new)), rtol)
    metrics = rundir.METRICS
    if not problems:
        print(f"reproduced: {len(rows)} rows of {metrics} match {how} on {on} (times aside)")
        return 0
    print(
        f"NOT reproduced: {metrics} of {new} differs from {source} (compared {how} on {on}, "
        f"times aside): {problems[0]}"
        + (f"; {len(problems) - 1} more difference(s)" if len(problems) > 1 else "")
    )
    return 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: exit 0 (reproduced), 1 (not reproduced or the run failed),
    2 for bad input (one line)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} RUN_DIR [--verify] [--rtol RTOL] [overrides ...]",
        description="Run a finished run again from its recorded config and overrides into a "
        f"new run directory (the source is only read); --verify compares the two {rundir.METRICS} "
        "files. Extra key=value overrides (and dlrun's flags, e.g. --config-dir) are passed on.",
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
    sys.exit(code)


if __name__ == "__main__":
    main()
