"""Sentencepiece subwords: trained from the recipe's data when a run has none, then reused.

Every text that enters or leaves a model, in training, validation, evaluation and
translation, goes through `Tokenizer.encode` / `Tokenizer.decode`, so a sentence is
tokenised the same way wherever it comes from.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from s2s.atomic import atomic_write_bytes
from s2s.config import TokenizerConfig
from s2s.errors import S2SError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
THREADED_BATCH = 4096  # texts from which `Tokenizer.encode_batch` uses sentencepiece's threads


class Tokenizer:
    """A sentencepiece model with s2s's fixed special ids (pad 0, unk 1, bos 2, eos 3)."""

    def __init__(self, model_file: Path) -> None:
        self.model_file = model_file
        try:
            self.processor = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as error:
            raise S2SError(f"{model_file}: cannot load sentencepiece model: {error}") from None

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text. Below THREADED_BATCH texts one text at a time: sentencepiece's
        list call starts threads on every call, and a thread waits to be scheduled when the
        cores are busy: 1-3 ms per one-line call in `s2s serve` next to its decoder, against
        5-40 us for the loop (which was no slower on 1 000 lines either). Corpora, millions
        of words at once, keep its threads."""
        if len(texts) >= THREADED_BATCH:
            return self.processor.encode(texts)
        return [self.processor.encode(text) for text in texts]

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.processor.id_to_piece(i) for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode([i for i in ids if i > EOS_ID])


@dataclass
class TokenizerPair:
    """Source and target tokenisers; the same object twice when the vocabulary is joint."""

    src: Tokenizer
    tgt: Tokenizer

    @property
    def joint(self) -> bool:
        return self.src is self.tgt


def tokenizer_files(run_dir: Path, joint: bool) -> tuple[Path, Path]:
    if joint:
        return run_dir / "spm.model", run_dir / "spm.model"
    return run_dir / "spm.src.model", run_dir / "spm.tgt.model"


def _train_one(config: TokenizerConfig, sentences: Iterable[str], model_file: Path) -> None:
    """Train one sentencepiece model in memory and write it to ``model_file``."""
    text = [s for s in sentences if s.strip()]
    if not text:  # callers name the file first; this keeps sentencepiece's INTERNAL away
        raise S2SError(
            "the training split holds no text (only blank lines): nothing to train the tokenizer on"
        )
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(text),
            model_writer=buffer,
            model_type=config.model_type,
            vocab_size=config.vocab_size,
            character_coverage=config.character_coverage,
            input_sentence_size=config.input_sentence_size,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,  # small corpora: use as many pieces as they support
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise S2SError(f"training the sentencepiece model failed: {error}") from None
    atomic_write_bytes(model_file, buffer.getbuffer())  # a killed run leaves no torn model


def train_tokenizers(
    config: TokenizerConfig, src_texts: list[str], tgt_texts: list[str], run_dir: Path
) -> TokenizerPair:
    """Train the source/target (or one joint) model(s) into the run directory."""
    from s2s.progress import Busy

    src_file, tgt_file = tokenizer_files(run_dir, config.joint)
    if config.model is not None:
        return adopt_tokenizer(config.model, run_dir, config.joint)
    what = f"training the {config.model_type} tokenizer ({config.vocab_size} pieces)"
    with Busy(what):
        if config.joint:
            _train_one(config, [*src_texts, *tgt_texts], src_file)
        else:
            _train_one(config, src_texts, src_file)
            _train_one(config, tgt_texts, tgt_file)
    return load_tokenizers(run_dir, config.joint)


def adopt_tokenizer(model: Path, run_dir: Path, joint: bool) -> TokenizerPair:
    """Copy an existing sentencepiece ``model`` into the run (both sides use it), so the
    run is self-contained and shares that model's vocabulary."""
    try:
        data = model.read_bytes()
        spm.SentencePieceProcessor(model_proto=data)
    except OSError as error:
        raise S2SError(f"tokenizer.model: cannot read {model}: {error.strerror}") from None
    except (RuntimeError, TypeError):
        raise S2SError(f"tokenizer.model: {model} is not a sentencepiece model") from None
    for path in set(tokenizer_files(run_dir, joint)):
        atomic_write_bytes(path, data)
    return load_tokenizers(run_dir, joint)


def load_tokenizers(run_dir: Path, joint: bool) -> TokenizerPair:
    src_file, tgt_file = tokenizer_files(run_dir, joint)
    for path in {src_file, tgt_file}:
        if not path.is_file():
            raise S2SError(f"{path}: tokenizer model missing from the run directory")
    src = Tokenizer(src_file)
    return TokenizerPair(src, src if joint else Tokenizer(tgt_file))
