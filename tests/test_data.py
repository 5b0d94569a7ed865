"""Corpora in every supported form, and tokenisers with joint or separate vocabularies."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers import multi30k_lines, write_lines

from s2s.config import SplitConfig, TokenizerConfig
from s2s.data.corpus import load_parallel
from s2s.data.tokenizer import EOS_ID, train_tokenizers
from s2s.errors import S2SError

SRC = ["A dog runs.", "", "Two men talk\ttogether."]
TGT = ["Ein Hund rennt.", "Leer", "Zwei Männer reden."]


def test_text_files_gzip_and_empty_lines(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "a.src.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(SRC) + "\n")
    write_lines(tmp_path / "a.tgt", TGT)
    text = load_parallel(SplitConfig(src=tmp_path / "a.src.gz", tgt=tmp_path / "a.tgt"), "train")
    assert text.src == SRC and text.tgt == TGT


def test_jsonl_with_nested_fields(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [{"translation": {"en": s, "de": t}} for s, t in zip(SRC, TGT, strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    split = SplitConfig(path=path, src_field="translation.en", tgt_field="translation.de")
    text = load_parallel(split, "train")
    assert text.src == SRC and text.tgt == TGT
    with pytest.raises(S2SError, match=r"no field 'translation\.fr'"):
        load_parallel(SplitConfig(path=path, src_field="translation.fr"), "train")


def test_tsv_keeps_quotes_as_text(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text('He said "hi".\tEr sagte "hallo".\nNA\tnull\n', encoding="utf-8")
    text = load_parallel(SplitConfig(path=path), "train")
    assert text.src == ['He said "hi".', "NA"]
    assert text.tgt == ['Er sagte "hallo".', "null"]


def test_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.src", SRC)
    write_lines(tmp_path / "a.tgt", TGT[:2])
    with pytest.raises(S2SError, match=r"a.src has 3 lines but .*a.tgt has 2 \(line 3 of .*a.src"):
        load_parallel(SplitConfig(src=tmp_path / "a.src", tgt=tmp_path / "a.tgt"), "train")


def test_empty_corpus_and_invalid_utf8(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("", encoding="utf-8")
    with pytest.raises(S2SError, match=r"data\.train: the corpus is empty"):
        load_parallel(SplitConfig(src=tmp_path / "empty", tgt=tmp_path / "empty"), "train")
    (tmp_path / "bad").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(S2SError, match=r"bad: invalid UTF-8 at line 2, byte 0"):
        load_parallel(SplitConfig(src=tmp_path / "bad", tgt=tmp_path / "bad"), "train")


def test_hub_dataset_offline_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(S2SError, match=r"data.train: cannot load hub dataset 'no-such/corpus'"):
        load_parallel(SplitConfig(hub="no-such/corpus"), "train")


@pytest.mark.parametrize("joint", [True, False])
def test_tokenizers_round_trip_real_text(tmp_path: Path, joint: bool) -> None:
    src = multi30k_lines("train.en.gz", 300)
    tgt = multi30k_lines("train.de.gz", 300)
    config = TokenizerConfig(vocab_size=200, joint=joint)
    tokenizers = train_tokenizers(config, src, tgt, tmp_path)
    assert tokenizers.joint is joint
    for line in src[:20]:
        ids = tokenizers.src.encode(line)
        assert min(ids) > EOS_ID
        assert tokenizers.src.decode(ids) == line
    if not joint:
        assert (tmp_path / "spm.src.model").is_file() and (tmp_path / "spm.tgt.model").is_file()
        assert "Männer" in tokenizers.tgt.decode(tokenizers.tgt.encode("Zwei Männer"))


def test_hub_path_loads_a_local_stand_in_repository(tmp_path: Path) -> None:
    """The hub code path, offline: `load_dataset` on a folder laid out like a hub repository
    (split files named after the split), with nested fields as translation datasets use."""
    repo = tmp_path / "my-corpus"
    repo.mkdir()
    rows = [{"translation": {"en": f"a house {i}", "de": f"ein Haus {i}"}} for i in range(5)]
    (repo / "validation.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    split = SplitConfig(
        hub=str(repo),
        hub_split="validation",
        src_field="translation.en",
        tgt_field="translation.de",
    )
    text = load_parallel(split, "valid")
    assert text.src == [f"a house {i}" for i in range(5)]
    assert text.tgt == [f"ein Haus {i}" for i in range(5)]
