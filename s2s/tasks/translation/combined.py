"""Decoding text with more than one run: an ensemble of runs of one vocabulary, and shallow
fusion with a language model of the target vocabulary (`s2s.core.search.combined`). The
runs are loaded through their tasks; vocabularies are compared by their sentencepiece
models, byte for byte, since a model's ids mean nothing under another tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from s2s.core.decoding import Decoder
from s2s.core.seq2seq import Seq2Seq
from s2s.data.tokenizer import EOS_ID, Tokenizer, TokenizerPair
from s2s.errors import S2SError

DEFAULT_LM_WEIGHT = 0.3


@dataclass(frozen=True)
class Combination:
    """Other runs to decode with: ensemble members (decoded with the same precision and
    [decode] changes as the main run) and a language model with its fusion weight."""

    members: Sequence[Path] = field(default_factory=tuple)
    lm: Path | None = None
    lm_weight: float = DEFAULT_LM_WEIGHT

    def active(self) -> bool:
        return bool(self.members) or self.lm is not None


def same_model(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers are one sentencepiece model (so their ids agree)."""
    return Path(a.model_file).read_bytes() == Path(b.model_file).read_bytes()


def require_shared_vocabulary(run: Path, ours: TokenizerPair, member: Path, theirs) -> None:
    """An ensemble member reads our source ids and writes our target ids."""
    if not (same_model(ours.src, theirs.src) and same_model(ours.tgt, theirs.tgt)):
        raise S2SError(
            f"{member}: its vocabulary is not {run}'s: ensembles need runs trained with one "
            "tokenizer (tokenizer.model, or the same data and [tokenizer] settings)"
        )


def require_target_vocabulary(run: Path, ours: TokenizerPair, lm: Path, theirs: Tokenizer) -> None:
    """A fused language model scores our target ids."""
    if not same_model(ours.tgt, theirs):
        raise S2SError(
            f"{lm}: its vocabulary is not {run}'s target vocabulary: train the language model "
            f"with tokenizer.model = {Path(ours.tgt.model_file)}"
        )


def load_members(
    run: Path,
    tokenizers: TokenizerPair,
    combination: Combination,
    device: str,
    amp: str | None,
    decode_overrides: Sequence[str],
) -> list[Seq2Seq]:
    """The ensemble members' models, each checked to share ``run``'s vocabulary."""
    from s2s.tasks.loading import load_run

    models = []
    for member in combination.members:
        _, theirs, model, _ = load_run(member, None, device, amp, decode_overrides=decode_overrides)
        require_shared_vocabulary(run, tokenizers, member, theirs)
        models.append(model)
    return models


def combined_decoder(
    run: Path,
    model: Seq2Seq,
    tokenizers: TokenizerPair,
    combination: Combination,
    device: torch.device,
    amp: str | None = None,
    decode_overrides: Sequence[str] = (),
) -> Decoder | None:
    """What search should drive for ``model`` with ``combination`` (None: the model
    alone): the members' ensemble, fused with the language model if there is one."""
    from s2s.core.search.combined import EnsembleDecoder, FusionDecoder
    from s2s.kernels.packed_linear import ensure_eval_mode

    if not combination.active():
        return None
    members = load_members(run, tokenizers, combination, device.type, amp, decode_overrides)
    for member in members:
        ensure_eval_mode(member)
    decoder: Decoder = EnsembleDecoder([model, *members]) if members else model
    if combination.lm is not None:
        from s2s.tasks.language_model.decoder import LanguageModelDecoder
        from s2s.tasks.language_model.loading import load_language_model

        _, lm_tokenizer, lm_model, _ = load_language_model(combination.lm, None, device.type)
        require_target_vocabulary(run, tokenizers, combination.lm, lm_tokenizer)
        fused_lm = LanguageModelDecoder(lm_model)
        decoder = FusionDecoder(decoder, fused_lm, combination.lm_weight, EOS_ID)
    return decoder
