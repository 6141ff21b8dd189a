"""The README is a spec: every Python snippet in it runs as written (with the shipped bundle), and
every `wmgym ...` or `python examples/...` command in its bash blocks, and in docs/results.md,
parses with the current CLI, so a renamed flag or a changed API fails here, not for a reader."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"
FIRST_COMMANDS = ['pip install -e ".[dev]"', "python -m pytest -q", "wmgym rollout --env WMFold-v0 --task fold_half --out fold_half.gif"]

pytestmark = pytest.mark.usefixtures("one_thread")


def fenced_blocks(path: Path, language: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```language block of `path`."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S)]


def commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line, argv) of every command in the bash blocks of `path`: continuation lines joined, comments
    dropped, leading VAR=value assignments removed."""
    found = []
    for start, code in fenced_blocks(path, "bash"):
        for offset, line in enumerate(code.replace("\\\n", " ").splitlines()):
            argv = shlex.split(line, comments=True)
            while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
                argv = argv[1:]
            if argv:
                found.append((start + offset, argv))
    return found


def wmgym_commands(path: Path) -> list[tuple[str, list[str]]]:
    """("FILE:LINE", the argv after `wmgym` or after `-m wmgym.cli`) of every such command in `path`."""
    out = []
    for line, argv in commands(path):
        if argv[0] == "wmgym":
            out.append((f"{path.name}:{line}", argv[1:]))
        elif "wmgym.cli" in argv:
            out.append((f"{path.name}:{line}", argv[argv.index("wmgym.cli") + 1:]))
    return out


def parse_wmgym(argv: list[str]):
    """Parse `wmgym ARGV` into its config dataclass exactly as `wmgym.cli.main` does, without running it."""
    import tyro

    from wmgym.cli import COMMANDS

    return tyro.extras.subcommand_cli_from_dict({name: cls for name, (cls, _) in COMMANDS.items()}, args=argv)


class _Parsed(Exception):
    pass


def parse_example(script: Path, argv: list[str], monkeypatch) -> argparse.Namespace:
    """Parse an example's arguments with its own argparse parser, stopping before it runs."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(_Parsed) as parsed:
        module.main(argv)
    return parsed.value.args[0]


PYTHON_SNIPPETS = fenced_blocks(README, "python")
WMGYM_COMMANDS = wmgym_commands(README) + wmgym_commands(RESULTS)


def test_readme_is_short_and_starts_with_the_three_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines (at most 300)"
    first_block = fenced_blocks(README, "bash")[0]
    assert first_block[0] <= 5 and first_block[1].splitlines() == FIRST_COMMANDS
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command


def test_readme_links_point_at_files():
    for target in re.findall(r"\]\(([^)#]+)[^)]*\)", README.read_text()):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_the_readme_has_snippets_and_commands_to_check():
    assert len(PYTHON_SNIPPETS) >= 8 and len(wmgym_commands(README)) >= 20 and len(wmgym_commands(RESULTS)) >= 5


@pytest.mark.parametrize("line, code", PYTHON_SNIPPETS, ids=[f"README.md:{line}" for line, _ in PYTHON_SNIPPETS])
def test_python_snippet_runs_as_written(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("where, argv", WMGYM_COMMANDS, ids=[f"{where} wmgym {argv[0]}" for where, argv in WMGYM_COMMANDS])
def test_wmgym_command_parses(where, argv):
    config = parse_wmgym(argv)
    assert type(config).__name__.endswith("Config")


def test_a_renamed_flag_does_not_parse():
    """The check above can fail: a flag the CLI does not have is refused."""
    with pytest.raises(SystemExit):
        parse_wmgym(["train-wm", "--data", "d.zarr", "--out", "runs/wm", "--no-such-flag", "1"])
    with pytest.raises(SystemExit):
        parse_wmgym(["no-such-command"])


def test_example_commands_parse(monkeypatch):
    examples = [(line, argv) for line, argv in commands(README) if argv[0] == "python" and argv[1].startswith("examples/")]
    assert examples
    for line, argv in examples:
        parse_example(ROOT / argv[1], argv[2:], monkeypatch)
    with pytest.raises(SystemExit):  # and an unknown flag is refused
        parse_example(ROOT / "examples" / "random_rollout.py", ["--no-such-flag"], monkeypatch)


def test_benchmark_scripts_cited_in_the_docs_exist():
    cited = set()
    for path in (README, RESULTS):
        cited |= set(re.findall(r"benchmarks/[\w/]+\.(?:py|sh)", path.read_text()))
    assert cited, "docs/results.md cites no benchmark script"
    for script in sorted(cited):
        assert (ROOT / script).is_file(), f"{script} is cited but does not exist"
