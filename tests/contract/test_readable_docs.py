"""docs/configuration.md's table of config groups lists every option `dlrun --help` lists, and
the README says how to install a CPU-only PyTorch build."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import call_main

ROOT = Path(__file__).resolve().parents[2]


def _help_groups(capsys) -> dict[str, list[str]]:
    from dlrun.cli import main as cli

    code, text, err = call_main(cli.main, capsys, "--help")
    assert code == 0, err
    section = text.split("== Config groups", 1)[1].split("==", 2)[1]
    groups = {}
    for line in section.splitlines():
        found = re.fullmatch(r"([\w/-]+): (.+)", line.strip())
        if found:
            groups[found.group(1)] = [o.strip() for o in found.group(2).split(",")]
    return groups


def test_every_config_group_option_is_documented(capsys) -> None:
    groups = _help_groups(capsys)
    assert {"task", "optimizer", "logger", "hparams_search", "debug"} <= set(groups)
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page.split("## Config groups", 1)[1].split("\n## ", 1)[0]
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `([\w/-]+)` \| (.+?) \|", table, re.M)
    }
    for group, options in groups.items():
        if group.startswith("schema/") or group == "task_optimizer":  # behind the YAML
            continue
        assert group in rows, f"docs/configuration.md lists no group {group}"
        missing = [o for o in options if f"`{o}`" not in rows[group]]
        assert not missing, f"docs/configuration.md: {group} misses {missing}"


def test_the_readme_says_how_to_install_a_cpu_only_torch() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
