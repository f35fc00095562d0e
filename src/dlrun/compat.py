"""The one fence around torch's and Hydra's private APIs.

dlrun reaches past the public surface of both libraries in a few places, for speed or for a
clearer message. Each such use sits here, behind a check that the attribute exists (they can
change in any release), with a fallback to the public path when it does not: the run is then
slower or its message plainer, never wrong. Nothing else in dlrun names a private attribute.

torch is imported inside the functions, never at module level: the CLI imports this module for
the Hydra parts on its torch-free path (``--help``, ``--cfg job`` and config errors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    import torch
    from torch import nn

# --------------------------------------------------------------------------- torch


def fused_kernel(name: str) -> Callable[..., None] | None:
    """torch's fused optimizer kernel ``sgd``, ``adam`` or ``adamw`` (the one that
    ``torch.optim`` runs with ``fused=True``); None where this torch has none."""
    import torch

    return getattr(torch, f"_fused_{name}_", None)


def has_fused_kernels() -> bool:
    """Whether torch.optim's ``fused=True`` can run here; without the kernels it would fail at
    the first step, so the optimizers use their public foreach implementation instead."""
    return all(fused_kernel(name) is not None for name in ("sgd", "adam", "adamw"))


def foreach_add_(tensors: list[torch.Tensor], value: float) -> None:
    """Add value to every tensor in place: one multi-tensor op where torch has it."""
    import torch

    add = getattr(torch, "_foreach_add_", None)
    if add is not None:
        add(tensors, value)
        return
    for t in tensors:
        t.add_(value)


def foreach_norm(tensors: list[torch.Tensor], ord: float) -> list[torch.Tensor]:
    """Each tensor's ord-norm: one multi-tensor op where torch has it."""
    import torch

    norm = getattr(torch, "_foreach_norm", None)
    if norm is not None:
        return list(norm(tensors, ord))
    return [torch.linalg.vector_norm(t, ord) for t in tensors]


def foreach_mul_(tensors: Sequence[torch.Tensor], factor: torch.Tensor) -> None:
    """Multiply every tensor in place by a 0-dim tensor: one multi-tensor op where torch has
    it (what clip_grad_norm_ itself runs)."""
    import torch

    mul = getattr(torch, "_foreach_mul_", None)
    if mul is not None:
        mul(list(tensors), factor)
        return
    for t in tensors:
        t.mul_(factor)


def foreach_clamp_(tensors: Sequence[torch.Tensor], low: float, high: float) -> None:
    """Clamp every tensor in place to [low, high] (what clip_grad_value_ itself runs)."""
    import torch

    lo = getattr(torch, "_foreach_clamp_min_", None)
    hi = getattr(torch, "_foreach_clamp_max_", None)
    if lo is not None and hi is not None:
        lo(list(tensors), low)
        hi(list(tensors), high)
        return
    for t in tensors:
        t.clamp_(low, high)


def foreach_copy_(targets: Sequence[torch.Tensor], sources: Sequence[torch.Tensor]) -> None:
    """Copy each source into its target in place: one multi-tensor op where torch has it."""
    import torch

    copy = getattr(torch, "_foreach_copy_", None)
    if copy is not None:
        copy(targets, sources)
        return
    for t, s in zip(targets, sources, strict=True):
        t.copy_(s)


def has_hooks(module: nn.Module) -> bool:
    """Whether forward or backward hooks are registered on the module (they may change what it
    computes). Where torch keeps its hooks elsewhere, every module counts as hooked, so that
    the callers take their general path."""
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    if not all(hasattr(module, n) for n in names):
        return True
    return any(bool(getattr(module, n)) for n in names)


def skip_compiler_import() -> None:
    """Let torch.optim's bookkeeping run without importing torch's compiler (seconds of
    start-up for a short run).

    ``Optimizer.add_param_group``, ``state_dict``, ``load_state_dict`` and ``zero_grad`` are
    wrapped in a lazy ``torch._dynamo.disable`` whose first call imports ``torch._dynamo``, which
    costs more than the rest of a short run's start-up. The wrapper only matters inside a
    torch.compile'd region, and dlrun never calls these methods there (``trainer.compile``
    compiles the loss alone), so each is marked as already wrapped with itself. Where torch
    changes this wrapper, nothing is marked and torch's own behaviour stays.
    """
    import torch

    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        method = getattr(torch.optim.Optimizer, name, None)
        inner = getattr(method, "__wrapped__", None)
        code = getattr(method, "__code__", None)
        if inner is None or code is None or "__dynamo_disable" not in code.co_names:
            continue
        if not hasattr(inner, "__dynamo_disable"):
            setattr(inner, "__dynamo_disable", inner)


# --------------------------------------------------------------------------- Hydra


def hydra_args_parser() -> argparse.ArgumentParser | None:
    """Hydra's own command-line parser, for checking its options before Hydra runs; None where
    Hydra no longer has it (the options are then checked by Hydra itself)."""
    try:
        from hydra._internal.utils import get_args_parser
    except ImportError:
        return None
    return get_args_parser()


@contextlib.contextmanager
def one_config_repository() -> Iterator[None]:
    """Build Hydra's config repository once for `--help`, not once per config group.

    Hydra's help lists the options of every group, and for each one re-reads every config
    source and deep-copies the whole ConfigStore (about once per option: seconds for dlrun's
    groups). The listing is read-only, so one repository per (config, overrides) serves them
    all. Where Hydra's internals differ, help runs as Hydra wrote it.
    """
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
    except ImportError:
        yield
        return
    original = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if original is None:
        yield
        return
    cache: dict[tuple[object, ...], object] = {}

    def cached(self: object, config_name: str | None, overrides: list[str]) -> object:
        key = (id(self), config_name, tuple(overrides))
        if key not in cache:
            cache[key] = original(self, config_name, overrides)
        return cache[key]

    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = cached
    try:
        yield
    finally:
        ConfigLoaderImpl._parse_overrides_and_create_caching_repo = original


def basic_sweeper_jobs(overrides: list[Any]) -> list[list[str]] | None:
    """The jobs Hydra's basic sweeper makes of parsed overrides, in job-number order; None where
    Hydra no longer has its sweeper where dlrun looks (the jobs are then listed as they run)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    except ImportError:
        return None
    split = getattr(BasicSweeper, "split_arguments", None)
    if split is None:
        return None
    return [list(job) for batch in split(overrides, None) for job in batch]


def stop_idle_workers() -> None:
    """joblib's loky backend keeps its worker processes for the next parallel call (and its
    executor is module-private); an interrupted sweep ends them rather than leave them behind."""
    import sys

    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)
    if executor is not None:
        with contextlib.suppress(Exception):
            executor.shutdown(wait=True, kill_workers=True)


def unstore(group: str, name: str) -> None:
    """Drop ``group/name`` from Hydra's ConfigStore, which has no public way to remove an entry:
    a task file forgotten between two commands in one process must not leave its config behind.
    Where the store's layout differs, the entry stays (a later store of the name replaces it)."""
    from hydra.core.config_store import ConfigStore

    node = getattr(ConfigStore.instance(), "repo", None)
    for part in group.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(f"{name}.yaml", None)


# --------------------------------------------------------------------------- omegaconf


def child_node(node: Any, key: Any) -> Any:
    """``node``'s child under ``key`` as stored (omegaconf's private ``_get_node``): a nested
    config stays a config and an interpolation is not resolved, so a value that cannot be
    resolved yet raises nothing. Where that is gone: the child as read, None if reading fails."""
    get_node = getattr(node, "_get_node", None)
    if get_node is not None:
        return get_node(key)
    try:
        return node[key]
    except Exception:
        return None
