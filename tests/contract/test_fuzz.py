"""Random command lines over the real config keys: dlrun runs, or refuses in one line, never
crashes with an unexpected exception."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlrun import tasks
from dlrun.config import schema
from dlrun.config.optimizers import OPTIMIZER_SCHEMAS
from dlrun.config.trainer import TrainerConfig


def fields(kind: type) -> list[str]:
    return [f.name for f in dataclasses.fields(kind)]


NOT_FUZZED = {"trainer.epochs", "trainer.progress", "trainer.plots", "data.download"}
KEYS = sorted(
    {
        *(f"trainer.{k}" for k in fields(TrainerConfig)),
        *(f"optimizer.{k}" for s in OPTIMIZER_SCHEMAS.values() for k in fields(s)),
        *(f"task.{k}" for t in tasks.found().values() for k in fields(t.config)),
        *(f"data.{k}" for t in tasks.found().values() if t.data for k in fields(t.data)),
        *(k for k in fields(schema.Config) if k not in ("task", "optimizer", "trainer", "data")),
    }
    - NOT_FUZZED
)
GROUPS = {
    "task": [*tasks.found(), "mnist", "nope", ""],
    "optimizer": ["sgd", "momentum", "adam", "adamw", "rmsprop", "nope"],
}
VALUES = st.one_of(
    st.integers(-2, 12).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.sampled_from(
        [
            "true",
            "false",
            "null",
            "",
            "''",
            "abc",
            "[1,2]",
            "[]",
            "{}",
            "1e309",
            "-0.0",
            "???",
            "${oc.env:HOME}",
            "${nope}",
            "cuda:99",
            "cpu",
            "auto",
            "mps",
            "random",
            "99999999999999999999",
            ".",
            "/",
            "0x10",
            "1_000",
        ]
    ),
    st.text("abc01.:-_ ,=[]{}'\"", max_size=6),
)
OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(list(GROUPS)).flatmap(
        lambda g: st.sampled_from(GROUPS[g]).map(lambda v: f"{g}={v}")
    ),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(overrides=st.lists(OVERRIDE, max_size=4), epochs=st.sampled_from([0, 1, 2]))
def test_random_command_lines_never_crash(dlrun, overrides: list[str], epochs: int) -> None:
    # never download, never train long, never draw plots (speed)
    fixed = ["trainer.plots=false", "trainer.progress=false", f"trainer.epochs={epochs}"]
    if any(
        o in (f"task={t}" for t in ("mnist", "mnist-mlp", "housing-regression")) for o in overrides
    ):
        fixed.append("data.download=false")
    r = dlrun(*overrides, *fixed)
    assert "internal error" not in r.err, (overrides, r.err)
    assert "Traceback" not in r.err + r.out, (overrides, r.err)
    assert r.code in (0, 2, 3), (overrides, r.code, r.err)
    if r.code:
        lines = r.err.strip().splitlines()
        assert lines and lines[-1].startswith("dlrun: error: "), (overrides, r.err)
