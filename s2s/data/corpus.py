"""Parallel corpora through HF `datasets`: local text, TSV or JSON-lines files, or the hub.

Tokenised splits are cached as Arrow files in the run directory, keyed by the tokeniser
and the data files, so a second run does not tokenise again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import lzma
from dataclasses import dataclass
from pathlib import Path

from s2s.atomic import atomic_file
from s2s.config import SplitConfig
from s2s.data.tokenizer import TokenizerPair
from s2s.errors import S2SError
from s2s.progress import TaskProgress, progress_enabled

log = logging.getLogger(__name__)


@dataclass
class ParallelText:
    """Raw sentence pairs of one split, line-aligned. A JSON-lines target field holding a
    list (several references, e.g. SciTLDR) gives its first item as ``tgt`` and all of them
    as ``references``; otherwise ``references`` is None (one reference: ``tgt``)."""

    src: list[str]
    tgt: list[str]
    references: list[list[str]] | None = None

    def all_references(self) -> list[list[str]]:
        """Every reference of every example (one each unless the corpus has several)."""
        return self.references if self.references is not None else [[t] for t in self.tgt]


@dataclass
class TokenizedSplit:
    """Token ids of one split (no BOS/EOS), aligned with the raw text."""

    src: list[list[int]]
    tgt: list[list[int]]
    raw: ParallelText


def _datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def open_compressed(path: Path):
    """Open a text file as bytes, through gzip or xz when its suffix says so."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    return path.open("rb")


def _first_invalid_line(path: Path) -> str | None:
    """Where a text file stops being UTF-8, as 'line N', to point the user at it."""
    with open_compressed(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return f"line {number}, byte {error.start}"
    return None


def _read_lines(path: Path) -> list[str]:
    if path.stat().st_size == 0:
        return []
    try:
        column = _datasets().load_dataset("text", data_files={"x": str(path)}, split="x")
    except Exception as error:
        where = _first_invalid_line(path)
        if where:
            raise S2SError(f"{path}: invalid UTF-8 at {where}") from None
        raise S2SError(f"{path}: cannot read: {type(error).__name__}: {error}") from None
    return list(column["text"])


def _field(record: dict, dotted: str, origin: str):
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise S2SError(f"{origin}: no field {dotted!r} (have: {', '.join(record)})")
        value = value[part]
    return value


def _text_list(value, origin: str, field: str) -> list[str]:
    """A JSON field as a list of strings: a string is one item, a list of strings many."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str | int | float) for item in items):
        raise S2SError(f"{origin}: field {field!r} is not text or a list of texts: {value!r:.60}")
    return [str(item) for item in items]


def _read_records(split: SplitConfig, name: str) -> list[dict]:
    datasets = _datasets()
    if split.hub:
        try:
            data = datasets.load_dataset(split.hub, split.hub_config, split=split.hub_split or name)
        except Exception as error:
            raise S2SError(
                f"data.{name}: cannot load hub dataset {split.hub!r} (offline, or a wrong "
                f"name/config/split?): {type(error).__name__}: {str(error).splitlines()[0]}"
            ) from None
        return list(data)
    path = split.path
    assert path is not None
    suffixes = "".join(path.suffixes)
    try:
        if ".tsv" in suffixes:
            data = datasets.load_dataset(
                "csv",
                data_files={"x": str(path)},
                split="x",
                delimiter="\t",
                column_names=[split.src_field, split.tgt_field],
                quoting=3,  # csv.QUOTE_NONE: quotes are text
                keep_default_na=False,
            )
        elif ".json" in suffixes:
            data = datasets.load_dataset("json", data_files={"x": str(path)}, split="x")
        else:
            raise S2SError(f"data.{name}.path: {path}: expected a .tsv or .jsonl file")
    except S2SError:
        raise
    except Exception as error:
        raise S2SError(f"{path}: cannot read: {type(error).__name__}: {error}") from None
    return list(data)


def _aligned_lines(src: list[str], src_path: Path, path: Path, name: str) -> list[str]:
    """The lines of target file ``path``; a line count other than the source's is an error
    naming both files."""
    tgt = _read_lines(path)
    if len(src) != len(tgt):
        longer = src_path if len(src) > len(tgt) else path
        raise S2SError(
            f"data.{name}: {src_path} has {len(src)} lines but {path} has {len(tgt)} "
            f"(line {min(len(src), len(tgt)) + 1} of {longer} has no partner)"
        )
    return tgt


def load_parallel(split: SplitConfig, name: str) -> ParallelText:
    """Read one split's sentence pairs; mismatched line counts are an error naming both.
    Several target files (or a JSON-lines list field) are references of each source: the
    first is ``tgt``, all are ``references``."""
    if split.src is not None and split.tgt is not None:
        src = _read_lines(split.src)
        sides = [_aligned_lines(src, split.src, path, name) for path in split.target_files()]
        tgt = sides[0]
        if len(sides) > 1 and src:
            return ParallelText(src, tgt, [list(refs) for refs in zip(*sides, strict=True)])
    else:
        origin = f"data.{name}"
        records = _read_records(split, name)
        # a list-valued source (sentences) is joined; a list-valued target is references
        src = [
            " ".join(_text_list(_field(r, split.src_field, origin), origin, split.src_field))
            for r in records
        ]
        refs = [
            _text_list(_field(r, split.tgt_field, origin), origin, split.tgt_field) for r in records
        ]
        tgt = [r[0] for r in refs]
        if any(len(r) > 1 for r in refs):
            return ParallelText(src, tgt, refs)
    if not src:
        raise S2SError(f"data.{name}: the corpus is empty")
    return ParallelText(src, tgt)


def _cache_key(split: SplitConfig, tokenizers: TokenizerPair) -> str:
    digest = hashlib.sha256()
    for model_file in {tokenizers.src.model_file, tokenizers.tgt.model_file}:
        digest.update(model_file.read_bytes())
    for path in split.files():
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(f"{split.hub}:{split.hub_config}:{split.hub_split}".encode())
    return digest.hexdigest()[:16]


def tokenize_split(
    split: SplitConfig, name: str, tokenizers: TokenizerPair, cache_dir: Path | None
) -> TokenizedSplit:
    """Load and tokenise a split, reusing the run directory's Arrow cache when it is valid."""
    raw = load_parallel(split, name)
    cache_file = None
    if cache_dir is not None:
        cache_file = cache_dir / f"{name}-{_cache_key(split, tokenizers)}.arrow"
    cached = cache_file is not None and cache_file.is_file()
    if cached:
        log.debug("data.%s: reusing the tokenized cache %s", name, cache_file)
    if cache_file is None or cached:
        return _tokenize(raw, name, tokenizers, cache_file, show=not cached)
    with atomic_file(cache_file) as scratch:  # datasets' own temporaries go there too
        return _tokenize(raw, name, tokenizers, scratch, show=True)


def _tokenize(
    raw: ParallelText, name: str, tokenizers: TokenizerPair, cache_file: Path | None, show: bool
) -> TokenizedSplit:
    """Tokenise ``raw`` through HF datasets, reading or writing the Arrow ``cache_file``."""
    table = _datasets().Dataset.from_dict({"src": raw.src, "tgt": raw.tgt})
    progress = TaskProgress(
        f"tokenizing data.{name}", len(raw.src), "pairs", enabled=show and progress_enabled()
    )

    def encode(batch: dict) -> dict:
        ids = {
            "src_ids": tokenizers.src.encode_batch(batch["src"]),
            "tgt_ids": tokenizers.tgt.encode_batch(batch["tgt"]),
        }
        progress.update(len(batch["src"]))
        return ids

    with progress:
        encoded = table.map(
            encode,
            batched=True,
            batch_size=2000,
            cache_file_name=str(cache_file) if cache_file else None,
            new_fingerprint=cache_file.stem if cache_file else None,
            remove_columns=["src", "tgt"],
        )
    return TokenizedSplit(list(encoded["src_ids"]), list(encoded["tgt_ids"]), raw)
