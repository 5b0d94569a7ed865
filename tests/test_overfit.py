"""Learning works end to end: a small model memorises a 50-pair reversal task exactly."""

from __future__ import annotations

import random
from pathlib import Path

from helpers import write_lines

from s2s.run.directory import RunDir
from s2s.tasks.loading import load_run
from s2s.tasks.recipe import load_config
from s2s.tasks.translation.trainer import TranslationTrainer
from s2s.tasks.translation.translator import Translator

RECIPE = """
[data.train]
src = "train.src"
tgt = "train.tgt"
[data.valid]
src = "train.src"
tgt = "train.tgt"

[tokenizer]
model_type = "word"
vocab_size = 40

[model]
embed_size = 32
hidden_size = 64
encoder_layers = 1
decoder_layers = 1
dropout = 0.0

[train]
max_tokens = 1000
max_steps = 400
max_epochs = 1000
valid_every = 400
valid_decode = false
early_stopping_metric = "loss"
warmup_steps = 20
lr = 0.01
label_smoothing = 0.0
threads = 1
"""


def test_model_learns_to_reverse_50_sequences_exactly(tmp_path: Path) -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(20)]
    sources = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) for _ in range(50)]
    targets = [" ".join(reversed(s.split())) for s in sources]
    write_lines(tmp_path / "train.src", sources)
    write_lines(tmp_path / "train.tgt", targets)
    (tmp_path / "reverse.toml").write_text(RECIPE, encoding="utf-8")

    config = load_config(tmp_path / "reverse.toml")
    TranslationTrainer(config, RunDir(tmp_path / "run"), quiet=True).train()

    config, tokenizers, model, device = load_run(tmp_path / "run")
    translator = Translator(model, tokenizers, config.decode, device)
    greedy = [h[0] for h in translator.translate(sources, beam_size=1)]
    beam = [h[0] for h in translator.translate(sources, beam_size=4)]
    assert greedy == targets
    assert beam == targets
