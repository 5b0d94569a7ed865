"""A third-party cell, installed with pip into a fresh virtual environment, is found by
`s2s cells`, trains and translates; its own tests pass with the kit; and the main
distribution does not swallow the example.

Everything is offline: the nested venv sees the packages of the environment running the
tests (a `.pth` file adds its site-packages; `--system-site-packages` would give the *base*
interpreter's instead, which lacks them when the tests run in a virtualenv), and pip
installs with --no-index --no-deps --no-build-isolation. pip builds in the source folder,
so the example is copied to a temporary folder first, keeping the tree clean.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT, tiny_recipe

EXAMPLE = ROOT / "plugins" / "s2s-mingru"
PIP_OFFLINE = ["-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index"]
SKIP_BUILD_LEFTOVERS = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*cache")


def run(*args: str | Path, cwd: Path | None = None, stdin: bytes | None = None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, input=stdin, capture_output=True, timeout=300
    )


def succeeded(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 0 or pytest.fail(
        f"{result.args} exited {result.returncode}:\n{result.stdout.decode()}\n"
        f"{result.stderr.decode()}"
    )


def running_site_packages() -> list[str]:
    """The site-packages folders of the environment running the tests, virtualenv or not."""
    folders = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    folders += site.getsitepackages()
    return list(dict.fromkeys(folders))


def nested_venv(folder: Path) -> Path:
    """A new venv in ``folder`` that also sees this environment's packages (after its own)."""
    assert succeeded(run(sys.executable, "-m", "venv", "--without-pip", "venv", cwd=folder))
    python = folder / "venv" / "bin" / "python"
    where = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    assert succeeded(where)
    own_site_packages = Path(where.stdout.decode().strip())
    adds = "; ".join(f"site.addsitedir({path!r})" for path in running_site_packages())
    (own_site_packages / "_running_environment.pth").write_text(f"import site; {adds}\n")
    return python


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a venv with the example installed, the installed copy's source folder)."""
    folder = tmp_path_factory.mktemp("plugin")
    source = folder / "s2s-mingru"
    shutil.copytree(EXAMPLE, source, ignore=SKIP_BUILD_LEFTOVERS)
    python = nested_venv(folder)
    assert succeeded(run(python, *PIP_OFFLINE, source))
    return python, source


def test_the_nested_venv_imports_s2s_from_the_running_environment(venv) -> None:
    python, _ = venv
    result = run(python, "-c", "import s2s, sys; print(s2s.__file__); print(sys.prefix)")
    assert succeeded(result)
    s2s_file, prefix = result.stdout.decode().split()
    assert Path(s2s_file).resolve() == (ROOT / "s2s" / "__init__.py").resolve() or (
        Path(s2s_file).resolve().is_relative_to(Path(sysconfig.get_path("purelib")).resolve())
    )
    assert Path(prefix).resolve() == python.parent.parent.resolve()


def test_s2s_cells_lists_the_installed_plugin(venv) -> None:
    python, _ = venv
    result = run(python, "-m", "s2s", "cells")
    assert succeeded(result)
    rows = {line.split()[0]: line.split() for line in result.stdout.decode().splitlines()}
    assert rows["mingru"][:5] == ["mingru", "s2s_mingru:MinGRUCell", "s2s-mingru", "0.1.0", "yes"]
    assert "update_bias=0.0, scan_chunk=32" in " ".join(rows["mingru"])
    assert {"rnn", "lstm", "gru", "crnn"} <= set(rows)


def test_train_and_translate_with_the_plugin_cell(venv, tmp_path: Path) -> None:
    python, _ = venv
    recipe = tiny_recipe(tmp_path, pairs=120, steps=4)
    out = tmp_path / "run"
    cell = ["--set", "model.cell=mingru", "--set", "model.cell_options.update_bias=-1.0"]
    assert succeeded(run(python, "-m", "s2s", "train", recipe, "--out", out, *cell, "-q"))
    assert (out / "checkpoints" / "last.pt").is_file()
    assert 'cell = "mingru"' in (out / "config.toml").read_text()
    lines = b"A man is riding a bicycle.\n\nTwo dogs play in the snow.\n"
    result = run(python, "-m", "s2s", "translate", out, "--beam", "2", stdin=lines)
    assert succeeded(result)
    output = result.stdout.decode().split("\n")
    assert len(output) == 4 and output[1] == "" and output[3] == ""


def test_the_plugin_test_suite_passes_with_the_kit(venv) -> None:
    python, source = venv
    result = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=source)
    assert succeeded(result)
    assert " passed" in result.stdout.decode()


def test_the_main_wheel_does_not_contain_the_example(tmp_path: Path) -> None:
    project = tmp_path / "s2s"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    for name in ("s2s", "plugins"):
        shutil.copytree(ROOT / name, project / name, ignore=SKIP_BUILD_LEFTOVERS)
    wheels = tmp_path / "wheels"
    result = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
        "--no-index", "-w", wheels, project,
    )  # fmt: skip
    assert succeeded(result)
    (wheel,) = wheels.glob("s2s-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert packages == {"s2s", "s2s_cells"}
    (entry_points_txt,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    entry_points = zipfile.ZipFile(wheel).read(entry_points_txt).decode()
    assert "mingru" not in entry_points and "crnn = s2s_cells.crnn:CRNNCell" in entry_points
