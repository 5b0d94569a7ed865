"""Fuzzing the recipe loader: whatever the file or the --set overrides hold, the result is a
Config or a one-line ConfigError, never another exception."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w
from helpers import tiny_recipe
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s.config import Config
from s2s.errors import ConfigError
from s2s.tasks.recipe import load_config

SECTIONS = ["task", "data", "data.train", "data.valid", "tokenizer", "model", "train", "decode"]
KEYS = [
    *Config.model_fields,
    *(
        key
        for section in ("task", "tokenizer", "model", "train", "decode")
        for key in Config.model_fields[section].annotation.model_fields
    ),
    "src",
    "tgt",
    "path",
    "hub",
    "cell_options",
    "forget_bias",
    "extra",
    "",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["lstm", "gru", "cuda", "bf16", "train.en", "\x00", "../x", "nope.txt"])
)
VALUES = st.recursive(
    SCALARS.filter(lambda v: v is not None),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def recipe_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    tiny_recipe(folder, pairs=5)
    return folder


def check(path: Path, overrides: list[str] | None = None) -> None:
    try:
        config = load_config(path, overrides)
    except ConfigError as error:
        message = str(error)
        assert message and "\n" not in message, message
    else:
        assert isinstance(config, Config)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text(recipe_folder: Path, text: str) -> None:
    path = recipe_folder / "random.toml"
    path.write_text(text, encoding="utf-8")
    check(path)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=100))
def test_arbitrary_bytes(recipe_folder: Path, data: bytes) -> None:
    path = recipe_folder / "bytes.toml"
    path.write_bytes(data)
    check(path)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(SECTIONS), st.sampled_from(KEYS), VALUES), min_size=1, max_size=4
    )
)
def test_valid_recipe_with_random_edits(recipe_folder: Path, edits) -> None:
    raw = tomllib.loads((recipe_folder / "tiny.toml").read_text(encoding="utf-8"))
    for section, key, value in edits:
        node = raw
        for part in section.split("."):
            child = node.setdefault(part, {})
            node = child if isinstance(child, dict) else {}
        node[key] = value
    path = recipe_folder / "edited.toml"
    try:
        path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    except (TypeError, ValueError):
        return  # a value TOML cannot hold (such as a NUL in a key) never reaches the loader
    check(path)


@settings(max_examples=300, deadline=None)
@given(
    overrides=st.lists(
        st.text(max_size=30)
        | st.builds(
            lambda s, k, v: f"{s}.{k}={v}",
            st.sampled_from(SECTIONS),
            st.sampled_from(KEYS),
            st.text(max_size=12) | st.sampled_from(["[1, 2]", "{a = 1}", "1e999", "nan", '"x"']),
        ),
        max_size=3,
    )
)
def test_random_overrides(recipe_folder: Path, overrides: list[str]) -> None:
    check(recipe_folder / "tiny.toml", overrides)
