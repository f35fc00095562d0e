"""`dlrun-gradcheck`: are a task's hand-written gradients right?

For a task with ``task.impl=scratch``, on a small batch in float64, the gradients its
hand-written backward fills are compared with autograd's (differentiating the same forward and
loss) and with central finite differences of the loss, parameter by parameter:

    dlrun-gradcheck task=fizzbuzz
    dlrun-gradcheck task=housing-regression data.path=housing.csv --batch 16

Exit 0 when every parameter passes, 1 when one fails, 2 for a usage mistake.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import NoReturn

from dlrun import tasks
from dlrun.cli import task_args
from dlrun.cli.args import one_line
from dlrun.config import schema
from dlrun.errors import DlrunError
from dlrun.terminal import Terminal as Console
from dlrun.terminal import ends_quietly_on_closed_pipe

PROG = "dlrun-gradcheck"


@dataclass
class Check:
    """One parameter's agreement: max absolute and relative error against a reference."""

    name: str
    shape: tuple[int, ...]
    autograd_abs: float
    autograd_rel: float
    numeric_abs: float
    numeric_rel: float
    elements: int  # how many elements the finite differences probed
    ok: bool


def compose(overrides: list[str]) -> schema.Config:
    """The run's config, as `dlrun <overrides>` would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = task_args.prepare(overrides)  # registers the tasks found and loads task=PATH.py
    try:
        with initialize_config_module(config_module="dlrun.conf", version_base=None):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise DlrunError(one_line(exc)) from None
    return schema.to_objects(cfg)


def _errors(ours, reference) -> tuple[float, float]:
    diff = float((ours - reference).abs().max()) if ours.numel() else 0.0
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    return diff, diff / max(scale, 1e-300) if diff else 0.0


def check(
    config: schema.Config,
    batch_size: int = 8,
    elements: int = 32,
    eps: float = 1e-6,
    rtol: float = 1e-5,
) -> list[Check]:
    """Compare the hand-written gradients of the task in `config` on its first rows."""
    import torch

    from dlrun.runs.setup import seed_everything  # imports torch: once there is work

    name = config.task.name
    if not isinstance(config.task, schema.ImplTaskConfig):
        raise DlrunError(f"task={name} has no hand-written implementation (task.impl)")
    seed_everything(config.seed)
    task = tasks.create(
        dataclasses.replace(config.task, impl="scratch"), config.data, torch.device("cpu")
    )
    if not task.hand_gradients:
        raise DlrunError(f"task={name} has no gradients to check (it is not trained by gradient)")
    model = task.build_model().double().train()
    batch = tuple(
        t[:batch_size].double() if t.is_floating_point() else t[:batch_size]
        for t in task.train_data
    )
    params = dict(model.named_parameters())

    task.loss(model, batch)  # the hand-written backward fills .grad
    hand = {n: p.grad.detach().clone() for n, p in params.items()}

    task.hand_gradients = False  # the same task's loss, differentiated by autograd
    try:
        autograd = torch.autograd.grad(task.loss(model, batch), list(params.values()))

        def loss() -> float:
            with torch.no_grad():
                return float(task.loss(model, batch))

        generator = torch.Generator().manual_seed(0)
        checks = []
        for (pname, p), auto in zip(params.items(), autograd, strict=True):
            flat = p.data.view(-1)
            probe = torch.randperm(flat.numel(), generator=generator)[:elements]
            numeric = torch.empty(len(probe), dtype=torch.float64)
            for i, j in enumerate(probe.tolist()):
                saved = float(flat[j])
                flat[j] = saved + eps
                plus = loss()
                flat[j] = saved - eps
                minus = loss()
                flat[j] = saved
                numeric[i] = (plus - minus) / (2 * eps)
            a_abs, a_rel = _errors(hand[pname], auto)
            picked = hand[pname].reshape(-1)[probe]
            n_abs, n_rel = _errors(picked, numeric)
            scale = max(float(auto.abs().max()), 1e-300)
            ok = a_abs <= 1e-10 + 1e-8 * scale and n_abs <= 1e-7 + rtol * scale
            checks.append(Check(pname, tuple(p.shape), a_abs, a_rel, n_abs, n_rel, len(probe), ok))
    finally:
        task.hand_gradients = True
    return checks


def show(task: str, checks: list[Check]) -> None:
    from rich.table import Table

    table = Table(title=f"{task}: hand-written gradients (float64)")
    for column in (
        "parameter",
        "shape",
        "vs autograd: max abs",
        "rel",
        "vs finite diff: max abs",
        "rel",
        "probed",
        "result",
    ):
        table.add_column(column, justify="left" if column in ("parameter", "result") else "right")
    for c in checks:
        table.add_row(
            c.name,
            "x".join(map(str, c.shape)),
            f"{c.autograd_abs:.2e}",
            f"{c.autograd_rel:.2e}",
            f"{c.numeric_abs:.2e}",
            f"{c.numeric_rel:.2e}",
            str(c.elements),
            "[green]pass[/green]" if c.ok else "[bold red]FAIL[/bold red]",
        )
    Console(width=120).print(table)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, like every dlrun error
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


@ends_quietly_on_closed_pipe
def main(argv: list[str] | None = None) -> None:
    parser = _Parser(
        prog=PROG,
        description="Compare a task's hand-written gradients (task.impl=scratch) with autograd "
        "and central finite differences, in float64, on the first rows of its training data.",
    )
    parser.add_argument("overrides", nargs="*", help="dlrun settings, e.g. task=fizzbuzz")
    parser.add_argument("--batch", type=int, default=8, help="rows of training data (8)")
    parser.add_argument(
        "--elements",
        type=int,
        default=32,
        help="elements per parameter probed by finite differences (32)",
    )
    parser.add_argument("--eps", type=float, default=1e-6, help="finite-difference step (1e-6)")
    parser.add_argument(
        "--rtol",
        type=float,
        default=1e-5,
        help="allowed error against finite differences, relative to the "
        "parameter's largest gradient (1e-5)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        for key, value in (("--batch", args.batch), ("--elements", args.elements)):
            if value < 1:
                raise DlrunError(f"{key}={value}: expected an integer >= 1")
        if not args.eps > 0 or not args.rtol > 0:
            raise DlrunError("--eps and --rtol: expected numbers > 0")
        config = compose(args.overrides)
        checks = check(config, args.batch, args.elements, args.eps, args.rtol)
    except DlrunError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    show(config.task.name, checks)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"{PROG}: FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print(f"all {len(checks)} parameters agree")


if __name__ == "__main__":
    main()
