"""Attention alignments between a source sentence and its translation.

Search keeps no attention history (beam search would have to reorder it at every step), so
the weights are recomputed afterwards: the decoder is stepped along the chosen hypothesis
with teacher forcing. The decoder state at each step depends only on the source and the
prefix, so these are the weights the search saw when it produced each token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor

from s2s.core.search import Hypothesis
from s2s.data.batching import collate, token_batches
from s2s.errors import S2SError
from s2s.kernels.packed_linear import ensure_eval_mode
from s2s.tasks.translation.translator import Translator

EOS_PIECE = "</s>"


@dataclass
class Alignment:
    """Attention of one translation: ``weights[i][j]`` is how much target subword i attended
    to source subword j; every row sums to one. Both sides end with ``</s>``."""

    source: list[str]
    target: list[str]
    weights: list[list[float]]
    translation: str

    def to_json(self, line: int, digits: int = 5) -> str:
        record = {
            "line": line,
            "source": self.source,
            "target": self.target,
            "translation": self.translation,
            "attention": [[round(w, digits) for w in row] for row in self.weights],
        }
        return json.dumps(record, ensure_ascii=False)


@torch.inference_mode()
def forced_attention(
    translator: Translator, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]
) -> list[Tensor]:
    """Attention [len(tgt) + 1, len(src) + 1] for each (source, target) pair (EOS included),
    stepping the decoder along the given targets in length-bucketed batches."""
    model, device = translator.model, translator.device
    ensure_eval_mode(model)
    results: list[Tensor] = [torch.empty(0) for _ in src_ids]
    if not src_ids:
        return results
    src_lengths = [len(s) + 1 for s in src_ids]
    tgt_lengths = [len(t) + 1 for t in tgt_ids]
    budget = max(translator.decode.batch_tokens, *src_lengths, *tgt_lengths)
    for indices in token_batches(src_lengths, tgt_lengths, budget):
        batch = collate(indices, src_ids, tgt_ids).to(device)
        assert batch.tgt_in is not None
        encoded = model.encode(batch.src, batch.src_lengths)
        state = model.initial_state(encoded)
        steps = []
        for prev in batch.tgt_in.unbind(1):  # BOS, y1, ..., yn (then padding)
            _, state, weights = model.decode_step(prev, state, encoded)
            steps.append(weights.float())
        matrix = torch.stack(steps, dim=1).cpu()  # B x T x S
        for row, index in enumerate(indices):
            results[index] = matrix[row, : tgt_lengths[index], : src_lengths[index]]
    return results


def build_alignments(
    translator: Translator,
    src_ids: Sequence[Sequence[int]],
    hypotheses: Sequence[Sequence[Hypothesis]],
) -> list[Alignment | None]:
    """The alignment of each source with its best hypothesis; None where there is none
    (an empty input line)."""
    wanted = [i for i, hyps in enumerate(hypotheses) if hyps and src_ids[i]]
    tgt_ids = [hypotheses[i][0].tokens for i in wanted]
    matrices = forced_attention(translator, [src_ids[i] for i in wanted], tgt_ids)
    src_tok, tgt_tok = translator.tokenizers.src, translator.tokenizers.tgt
    alignments: list[Alignment | None] = [None] * len(src_ids)
    for index, tokens, matrix in zip(wanted, tgt_ids, matrices, strict=True):
        alignments[index] = Alignment(
            source=[*src_tok.pieces(list(src_ids[index])), EOS_PIECE],
            target=[*tgt_tok.pieces(tokens), EOS_PIECE],
            weights=matrix.tolist(),
            translation=tgt_tok.decode(tokens),
        )
    return alignments


def align_sentence(translator: Translator, sentence: str, beam_size: int) -> Alignment:
    """Translate one sentence and return its attention alignment."""
    src_ids = translator.tokenizers.src.encode(sentence) if sentence.strip() else []
    if not src_ids:
        raise S2SError("the source sentence is empty")
    hypotheses = translator.search_ids([src_ids], beam_size)
    alignment = build_alignments(translator, [src_ids], hypotheses)[0]
    if alignment is None:
        raise S2SError("the search found no translation")
    return alignment


class AlignmentWriter:
    """Writes one JSON line per input line (empty lists for an empty line), numbering lines
    from 0 across chunks as ``--nbest`` output does, so tools can join the two."""

    def __init__(self, translator: Translator, stream: TextIO) -> None:
        self.translator = translator
        self.stream = stream
        self.line = 0

    def write(
        self, src_ids: Sequence[Sequence[int]], hypotheses: Sequence[Sequence[Hypothesis]]
    ) -> None:
        for alignment in build_alignments(self.translator, src_ids, hypotheses):
            if alignment is None:
                alignment = Alignment([], [], [], "")
            self.stream.write(alignment.to_json(self.line) + "\n")
            self.line += 1
        self.stream.flush()


@contextmanager
def alignment_file(translator: Translator, path: Path | None) -> Iterator[AlignmentWriter | None]:
    """An `AlignmentWriter` to ``path`` for `s2s translate --alignments`, or None without one."""
    if path is None:
        yield None
        return
    try:
        handle = path.open("w", encoding="utf-8")
    except OSError as error:
        raise S2SError(f"{path}: cannot write alignments: {error.strerror or error}") from None
    with handle:
        yield AlignmentWriter(translator, handle)
