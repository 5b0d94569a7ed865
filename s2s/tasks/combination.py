"""Decoding with more than one run: an ensemble of runs of one vocabulary, and shallow
fusion with a language model of the target vocabulary (`s2s.core.search.combined`), for
the text runs (translation, summarisation) and speech runs alike. The runs are loaded
through their tasks' loaders; vocabularies are compared by their sentencepiece models,
byte for byte, since a model's ids mean nothing under another tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from s2s.core.decoding import Decoder
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


def load_fusion_lm(
    combination: Combination, target: Tokenizer, run: Path, device: torch.device
) -> Decoder | None:
    """The combination's language model as a decoder (None: no --lm), checked to score
    ``target``'s pieces."""
    if combination.lm is None:
        return None
    from s2s.tasks.language_model.decoder import LanguageModelDecoder
    from s2s.tasks.language_model.loading import load_language_model

    _, lm_tokenizer, lm_model, _ = load_language_model(combination.lm, None, device.type)
    if not same_model(target, lm_tokenizer):
        raise S2SError(
            f"{combination.lm}: its vocabulary is not {run}'s target vocabulary: train the "
            f"language model with tokenizer.model = {Path(target.model_file)}"
        )
    return LanguageModelDecoder(lm_model)


def combine(
    model: Decoder, members: Sequence[Decoder], lm: Decoder | None, lm_weight: float
) -> Decoder:
    """``model`` averaged with its ensemble ``members``, fused with ``lm`` if given."""
    from s2s.core.search.combined import EnsembleDecoder, FusionDecoder

    decoder: Decoder = EnsembleDecoder([model, *members]) if members else model
    return FusionDecoder(decoder, lm, lm_weight, EOS_ID) if lm is not None else decoder


def combined_decoder(
    run: Path,
    model: torch.nn.Module,
    tokenizers: TokenizerPair,
    combination: Combination,
    device: torch.device,
    amp: str | None = None,
    decode_overrides: Sequence[str] = (),
) -> Decoder | None:
    """What search should drive for a text run's ``model`` with ``combination`` (None:
    the model alone): its ensemble with the members, fused with the language model."""
    from s2s.kernels.packed_linear import ensure_eval_mode
    from s2s.tasks.loading import load_run

    if not combination.active():
        return None
    members = []
    for member in combination.members:
        _, theirs, member_model, _ = load_run(
            member, None, device.type, amp, decode_overrides=decode_overrides
        )
        require_shared_vocabulary(run, tokenizers, member, theirs)
        ensure_eval_mode(member_model)
        members.append(member_model)
    lm = load_fusion_lm(combination, tokenizers.tgt, run, device)
    return combine(model, members, lm, combination.lm_weight)
