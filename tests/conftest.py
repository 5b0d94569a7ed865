"""Shared fixtures: tiny recipes over real Multi30k slices, and one tiny trained run."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MULTI30K = ROOT / "recipes" / "data" / "multi30k"


def search_step_log_probs(model, batch):
    """Log-probs [B, T, V] of search's decode_step fed the batch's targets one step at a
    time, in the caller's grad and autocast mode: what teacher forcing must match."""
    import torch

    encoded = model.encode(batch.src, batch.src_lengths)
    state = model.initial_state(encoded)
    steps = []
    for t in range(batch.tgt_in.size(1)):
        log_probs, state, _ = model.decode_step(batch.tgt_in[:, t], state, encoded)
        steps.append(log_probs.detach())
    return torch.stack(steps, dim=1)


def multi30k_lines(name: str, count: int) -> list[str]:
    with gzip.open(MULTI30K / name, "rt", encoding="utf-8") as handle:
        return [next(handle).rstrip("\n") for _ in range(count)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


TINY_MODEL = """
[tokenizer]
vocab_size = 300

[model]
embed_size = 32
hidden_size = 48
encoder_layers = 1
decoder_layers = 1
dropout = 0.0

[train]
max_tokens = 600
max_steps = {steps}
valid_every = {steps}
warmup_steps = 5
lr = 0.005
threads = 1

[decode]
beam_size = 3
"""


def tiny_recipe(folder: Path, pairs: int = 400, steps: int = 12) -> Path:
    """A recipe over the first ``pairs`` Multi30k training pairs, with a tiny model."""
    folder.mkdir(parents=True, exist_ok=True)
    write_lines(folder / "train.en", multi30k_lines("train.en.gz", pairs))
    write_lines(folder / "train.de", multi30k_lines("train.de.gz", pairs))
    write_lines(folder / "valid.en", multi30k_lines("val.en.gz", 40))
    write_lines(folder / "valid.de", multi30k_lines("val.de.gz", 40))
    recipe = folder / "tiny.toml"
    recipe.write_text(
        '[data.train]\nsrc = "train.en"\ntgt = "train.de"\n'
        '[data.valid]\nsrc = "valid.en"\ntgt = "valid.de"\n'
        '[data.test]\nsrc = "valid.en"\ntgt = "valid.de"\n' + TINY_MODEL.format(steps=steps),
        encoding="utf-8",
    )
    return recipe


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory trained for a few steps; shared by the inference tests."""
    from s2s.config import load_config
    from s2s.run_dir import RunDir
    from s2s.training import Trainer

    folder = tmp_path_factory.mktemp("tiny")
    config = load_config(tiny_recipe(folder))
    run = RunDir(folder / "run")
    Trainer(config, run, quiet=True).train()
    return run.path
