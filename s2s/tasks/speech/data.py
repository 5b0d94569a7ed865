"""Speech corpora: manifests (TSV with a header, or JSON lines) naming an audio or feature
file and its transcript, features computed once and cached in the run directory, and padded
batches of features.

Relative paths in a manifest are relative to the manifest's folder, or, when the split has
an ``archive``, to the root of that archive (extracted into the run's cache).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.atomic import atomic_write_bytes
from s2s.config import AudioConfig, SplitConfig
from s2s.data.archive import archive_digest, extract_archive
from s2s.data.batching import Batch, pad
from s2s.data.tokenizer import BOS_ID, EOS_ID, Tokenizer
from s2s.errors import S2SError
from s2s.progress import TaskProgress, progress_enabled
from s2s.tasks.speech.audio import utterance_features

log = logging.getLogger(__name__)

# [audio] keys that change the cached features
FEATURE_KEYS = ("features", "sample_rate", "n_mels", "frame_ms", "hop_ms", "deltas", "normalize")


@dataclass
class Manifest:
    """One split's utterances: resolved file paths and transcripts, in manifest order."""

    paths: list[Path]
    transcripts: list[str]


@dataclass
class SpeechSplit:
    """Features [frames, width] and target ids (no BOS/EOS) of one split, aligned.

    ``src``/``tgt`` are named as in a text split so the model card counts them alike
    (source "tokens" are feature frames)."""

    src: list[torch.Tensor]
    tgt: list[list[int]]
    manifest: Manifest


def _manifest_rows(path: Path, src_field: str, tgt_field: str) -> list[tuple[str, str, int]]:
    """(file, transcript, line number) per utterance of a .tsv (with header) or .jsonl."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise S2SError(f"{path}: invalid UTF-8 at line {line}") from None
    suffixes = "".join(path.suffixes)
    rows: list[tuple[str, str, int]] = []
    if ".tsv" in suffixes:
        reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
        for name in (src_field, tgt_field):
            if name not in (reader.fieldnames or []):
                header = ", ".join(reader.fieldnames or [])
                raise S2SError(f"{path}: line 1: no column {name!r} (header: {header})")
        for number, record in enumerate(reader, start=2):
            if record.get(src_field) is None or record.get(tgt_field) is None:
                raise S2SError(f"{path}: line {number}: fewer columns than the header")
            rows.append((record[src_field], record[tgt_field], number))
    elif ".json" in suffixes:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise S2SError(f"{path}: line {number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or src_field not in record or tgt_field not in record:
                raise S2SError(f"{path}: line {number}: needs fields {src_field!r}, {tgt_field!r}")
            rows.append((str(record[src_field]), str(record[tgt_field]), number))
    else:
        raise S2SError(f"{path}: a speech manifest is a .tsv (with a header) or .jsonl file")
    return rows


def read_manifest(split: SplitConfig, name: str, cache_dir: Path) -> Manifest:
    """Resolve one split's manifest; the files it names must exist."""
    if split.path is None:
        raise S2SError(f"data.{name}: a speech split is a manifest: set data.{name}.path")
    root = extract_archive(split.archive, cache_dir) if split.archive else split.path.parent
    paths, transcripts = [], []
    for file, transcript, number in _manifest_rows(split.path, split.src_field, split.tgt_field):
        if not file.strip():
            raise S2SError(f"{split.path}: line {number}: empty {split.src_field!r}")
        path = Path(file) if Path(file).is_absolute() else root / file
        if not path.is_file():
            where = f" (in {split.archive})" if split.archive else ""
            raise S2SError(f"{split.path}: line {number}: file not found: {file}{where}")
        paths.append(path)
        transcripts.append(transcript.strip())
    if not paths:
        raise S2SError(f"data.{name}: the manifest {split.path} is empty")
    return Manifest(paths, transcripts)


def _cache_file(split: SplitConfig, name: str, audio: AudioConfig, cache_dir: Path) -> Path:
    digest = hashlib.sha256(split.path.read_bytes())
    digest.update(f"{split.src_field}\t{split.tgt_field}".encode())
    if split.archive:
        digest.update(archive_digest(split.archive).encode())
    else:
        digest.update(str(split.path.parent).encode())
    digest.update(json.dumps(audio.model_dump(include=set(FEATURE_KEYS)), sort_keys=True).encode())
    return cache_dir / f"features-{name}-{digest.hexdigest()[:16]}.pt"


def split_features(
    split: SplitConfig, name: str, audio: AudioConfig, cache_dir: Path
) -> tuple[Manifest, list[torch.Tensor]]:
    """A split's manifest and features, computed once and then read from the run's cache."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(split, name, cache_dir)
    cache = _cache_file(split, name, audio, cache_dir)
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return manifest, list(saved["features"].split(saved["lengths"].tolist()))
        except (RuntimeError, KeyError, OSError, ValueError):
            log.warning("%s: unreadable feature cache, computing the features again", cache)
    features = []
    show = progress_enabled()
    total = len(manifest.paths)
    with TaskProgress(f"features of data.{name}", total, "files", enabled=show) as progress:
        for path in manifest.paths:
            features.append(utterance_features(path, audio))
            progress.update(1)
    widths = {f.size(1) for f in features}
    if len(widths) > 1:
        raise S2SError(f"data.{name}: feature files of different widths ({sorted(widths)})")
    buffer = io.BytesIO()
    lengths = torch.tensor([f.size(0) for f in features])
    torch.save({"features": torch.cat(features), "lengths": lengths}, buffer)
    atomic_write_bytes(cache, buffer.getbuffer())
    return manifest, features


def load_speech_split(
    split: SplitConfig, name: str, audio: AudioConfig, tokenizer: Tokenizer, cache_dir: Path
) -> SpeechSplit:
    """Features and target ids of one split."""
    manifest, features = split_features(split, name, audio, cache_dir)
    return SpeechSplit(features, tokenizer.encode_batch(manifest.transcripts), manifest)


def pad_features(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, width] zero-padded features and their lengths [B]."""
    lengths = torch.tensor([f.size(0) for f in features])
    out = features[0].new_zeros(len(features), int(lengths.max()), features[0].size(1))
    for row, f in enumerate(features):
        out[row, : f.size(0)] = f
    return out, lengths


def speech_collate(
    indices: list[int],
    features: Sequence[torch.Tensor],
    targets: Sequence[Sequence[int]] | None = None,
) -> Batch:
    """A batch of utterances: features as ``src`` (float), targets as for text."""
    src, lengths = pad_features([features[i] for i in indices])
    batch = Batch(indices, src, lengths)
    if targets is not None:
        batch.tgt_in = pad([[BOS_ID, *targets[i]] for i in indices])
        batch.tgt_out = pad([[*targets[i], EOS_ID] for i in indices])
    return batch
