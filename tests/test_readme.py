"""CI runs what the README tells a new user to run: the same install and test commands, in a
fresh virtualenv, so a green CI means the README's commands work on a clean machine."""

from __future__ import annotations

import re

from helpers import ROOT


def readme_block(heading: str) -> list[str]:
    """Command lines of the first ```sh block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, f"no sh block under {heading}"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_ci_installs_and_tests_exactly_as_the_readme_says() -> None:
    readme = readme_block("## Install and test")
    ci = ci_commands()
    assert readme[0].startswith("python3 -m venv "), readme[0]
    assert any(line.startswith('python3 -m venv "$scratch') for line in ci)
    assert readme[1:] == ["pip install -e '.[dev]'", "pytest"]
    for command in readme[1:]:
        assert command in ci, f".ci/run does not run the README's {command!r}"
    assert not any("python3 -m pytest" in line or "python -m pytest" in line for line in ci)
    assert ci.index("pip install -e '.[dev]'") < ci.index("pytest")


def test_ci_runs_the_readme_lint_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`ruff check . && ruff format --check .`" in text
    ci = ci_commands()
    assert "ruff check ." in ci and "ruff format --check ." in ci
