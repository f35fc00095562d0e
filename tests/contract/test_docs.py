"""The documentation is kept true by running it: README.md and docs/*.md.

(a) Every command of dlrun's four console scripts in a fenced shell code block (no language,
    or bash/sh/shell/console) runs:

    - `dlrun ARGS` is composed, not run: `dlrun --cfg job ARGS` through `dlrun.cli.main.main` in
      this process must exit 0 (so every group, option and key named exists and every value has the
      right type). Hydra refuses `--cfg` together with `-m`, so a sweep is expanded by Hydra's
      own BasicSweeper (`split_arguments`) and each of its jobs is composed with `--cfg job`.
      A command that already asks only for a config or help (`--cfg`, `--help`) runs as written.
    - A `$ dlrun ARGS` line followed by a `dlrun: error: ...` line documents a mistake: it runs
      for real (plots and progress bar off) and must print exactly that line, and, when the next
      command is `echo $?`, exit with the code shown under it.
    - `dlrun-report`, `dlrun-rerun`, `dlrun-eval` and `dlrun-gradcheck` run for real, in a
      fresh directory that holds `housing.csv` and the configs that the docs show as YAML under
      a `conf-mine/` path.
    - Paths that stand for a run (`outputs/2026-...`, `multirun/<name>/<job>`), a sweep
      (`multirun/<name>`) or a checkpoint (`path/to/best.pt`) as `resume=` values or as the
      arguments of dlrun-report, dlrun-rerun and dlrun-eval are replaced by the runs of one tiny
      sweep made once for the module (sine-bp, 2 epochs, seeds 0 and 1); a command naming two
      runs gets both.
    - Shell syntax: `# comments`, a leading `$ `, `\\` continuations, `&&`/`;`/`|` chains,
      leading `VAR=value` assignments, quotes (shlex), `python -m dlrun` and
      `torchrun ... -m dlrun ARGS` (checked as `dlrun ARGS`). Other programs are not run.
    - A block right after `<!-- docs-test: skip (reason) -->` is not run; the reason says what
      checks it instead.

(b) docs/architecture.md's module map names every .py module under src/dlrun, by its path
    there (`cli/main.py`, `tasks/base.py`, a package's `__init__.py` too), and nothing else.

(c) Every relative link in README.md and docs/*.md points at a file that exists, and a
    `#fragment` at one of that page's headings.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser

from dlrun.cli import main as cli
from tests.conftest import call_main

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SRC = ROOT / "src" / "dlrun"

# dlrun's console scripts, as the installed package declares them (pyproject.toml)
SCRIPTS: dict[str, Callable[[list[str] | None], None]] = {
    ep.name: ep.load()
    for ep in importlib.metadata.distribution("dlrun").entry_points
    if ep.group == "console_scripts"
}
QUIET = ["trainer.plots=false", "trainer.progress=false"]
SHELL = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b")
PLACEHOLDER = re.compile(r"^(outputs/\d{4}-|multirun/|path/to/)")
RUN_READERS = ("dlrun-report", "dlrun-rerun", "dlrun-eval")  # their paths are placeholders


@dataclass(frozen=True)
class Command:
    where: str  # page:line
    script: str
    args: tuple[str, ...]
    error: str | None = None  # the documented `dlrun: error:` line of a mistake
    code: int | None = None  # the documented exit code (`echo $?`)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the first line inside the fence
    lang: str
    body: list[str]
    skipped: bool


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        before = next((x for x in reversed(lines[:i]) if x.strip()), "")
        indent = len(fence["indent"])
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = [x[indent:] for x in lines[i + 1 : end]]
        yield Block(page, i + 2, fence["lang"], body, bool(SKIP.search(before)))
        i = end + 1


def shell_lines(block: Block) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, the command with continuations joined, the output lines shown after it)."""
    prompted = any(x.startswith("$ ") for x in block.body)
    entries: list[tuple[int, list[str], list[str]]] = []
    continued = False
    for n, raw in enumerate(block.body, block.line):
        if continued:
            entries[-1][1].append(raw.strip())
        elif prompted and not raw.startswith("$ "):
            if entries:
                entries[-1][2].append(raw)
            continue
        else:
            entries.append((n, [raw.removeprefix("$ ").strip()], []))
        continued = entries[-1][1][-1].endswith("\\")
        if continued:
            entries[-1][1][-1] = entries[-1][1][-1][:-1]
    for n, parts, output in entries:
        yield n, " ".join(parts), output


def split_commands(text: str) -> Iterator[list[str]]:
    """Each simple command of a shell line, as its words (comments and quotes handled)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            yield words
            words = []
        else:
            words.append(token)
    yield words


def as_script(words: list[str]) -> tuple[str, list[str]] | None:
    """(console script, its arguments) for a command that runs one of dlrun's, else None."""
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # VAR=value before the program
    if not words:
        return None
    if words[0] in SCRIPTS:
        return words[0], words[1:]
    launcher = words[0] in ("torchrun", "python", "python3")
    if launcher and "-m" in words:
        at = words.index("-m")
        if words[at + 1 : at + 2] == ["dlrun"]:
            return "dlrun", words[at + 2 :]
    return None


def documented_commands() -> Iterator[Command]:
    for page in PAGES:
        for block in blocks(page):
            if block.lang not in SHELL or block.skipped:
                continue
            lines = list(shell_lines(block))
            for k, (n, text, output) in enumerate(lines):
                for words in split_commands(text):
                    found = as_script(words)
                    if found is None:
                        continue
                    error = next((x for x in output if x.startswith("dlrun: error:")), None)
                    code = None
                    if error and k + 1 < len(lines) and lines[k + 1][1] == "echo $?":
                        code = int(lines[k + 1][2][0])
                    where = f"{page.relative_to(ROOT)}:{n}"
                    yield Command(where, found[0], tuple(found[1]), error, code)


COMMANDS = list(documented_commands())


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny real sweep: its directory stands for every sweep, its jobs for every run."""
    swept = tmp_path_factory.mktemp("docs") / "sweep"
    args = ["-m", "task=sine-bp", "trainer.epochs=2", "seed=0,1", f"hydra.sweep.dir={swept}"]
    try:
        cli.main([*args, *QUIET])
    except SystemExit as exc:
        assert exc.code == 0, f"the fixture sweep failed: exit {exc.code}"
    assert (swept / "1" / "checkpoints" / "best.pt").is_file()
    return swept


def substitute(args: tuple[str, ...], script: str, swept: Path) -> list[str]:
    """The documented placeholder paths replaced by the fixture's sweep, runs and checkpoints."""
    runs = iter(sorted(p for p in swept.iterdir() if (p / "summary.json").is_file()))
    seen: dict[str, str] = {}

    def real(path: str) -> str:
        if not PLACEHOLDER.match(path):
            return path
        if path not in seen:
            if path.endswith(".pt"):
                seen[path] = str(swept / "0" / "checkpoints" / Path(path).name)
            elif path.startswith("multirun/") and not path.rsplit("/", 1)[-1].isdigit():
                seen[path] = str(swept)
            else:
                seen[path] = str(next(runs))
        return seen[path]

    out = []
    for a in args:
        if a.startswith("resume="):
            out.append("resume=" + real(a.split("=", 1)[1]))
        elif script in RUN_READERS and not a.startswith("-") and "=" not in a:
            out.append(real(a))
        else:
            out.append(a)
    return out


def user_files(cwd: Path) -> None:
    """What the documented commands expect in the user's directory: a housing CSV, every config
    file the docs show as YAML under a `conf-mine/...yaml` path, and the repository's examples/
    (the docs run them "from the repository root")."""
    (cwd / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    header = "MedInc,HouseAge,AveRooms,AveBedrms,Population,AveOccup,Latitude,Longitude"
    rows = [f"{header},MedHouseVal"]
    rows += [",".join(str((i * 7 + j * 3) % 11 + j) for j in range(9)) for i in range(60)]
    (cwd / "housing.csv").write_text("\n".join(rows) + "\n")
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"`(conf-mine/[\w/.-]+\.yaml)`[^`]*?```yaml\n(.*?)```", text, re.S):
            (cwd / m[1]).parent.mkdir(parents=True, exist_ok=True)
            (cwd / m[1]).write_text(m[2])


def compose_checks(args: list[str]) -> list[list[str]]:
    """The `--cfg job` invocations that check a dlrun command without running it."""
    if {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i"} & set(args):
        return [args]
    parsed = get_args_parser().parse_args(args)
    options = [a for a in args if a not in parsed.overrides and a not in ("-m", "--multirun")]
    if not parsed.multirun:
        return [[*options, "--cfg", "job", *parsed.overrides]]
    overrides = OverridesParser.create().parse_overrides(parsed.overrides)
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return [[*options, "--cfg", "job", *job] for job in jobs]


def test_the_docs_have_commands_of_every_script() -> None:
    assert {c.script for c in COMMANDS} == set(SCRIPTS)
    assert any(c.error for c in COMMANDS) and any("-m" in c.args for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.where} {c.script}")
def test_documented_command(
    command: Command,
    sweep_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    user_files(tmp_path)
    args = substitute(command.args, command.script, sweep_dir)
    main = SCRIPTS[command.script]
    shown = f"{command.where}: {command.script} {shlex.join(command.args)}"

    if command.error is not None:
        if any(a.startswith("device=cuda") for a in args):
            import torch

            if torch.cuda.is_available():
                pytest.skip("documents a machine without CUDA")
        if "logger=mlflow" in args and importlib.util.find_spec("mlflow") is None:
            pytest.skip("needs mlflow: python -m pip install -e '.[test]'")
        code, out, err = call_main(main, capsys, *args, *QUIET, f"hydra.run.dir={tmp_path}/run")
        assert code == (command.code if command.code is not None else 2), (shown, err)
        assert err.strip().splitlines()[-1] == command.error, shown
        return
    if command.script != "dlrun":
        code, out, err = call_main(main, capsys, *args)
        assert code == 0, (shown, out, err)
        return
    for check in compose_checks(args):
        code, out, err = call_main(main, capsys, *check)
        assert code == 0, (shown, check, err)
        assert out.strip(), (shown, check)


def test_module_map_matches_src() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `([\w/]+\.py)` \|", section, re.M)
    assert len(named) == len(set(named)), "a module is named twice"
    modules = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")}
    assert not modules - set(named), "modules missing from the map"
    assert not set(named) - modules, "the map names modules that do not exist"


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_relative_links_resolve() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif fragment and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(), re.M)
                if fragment not in {slug(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken


def test_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
