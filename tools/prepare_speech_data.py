"""Build the speech recipes' shipped data from the corpora in ../shared/data.

    python tools/prepare_speech_data.py ../shared/data recipes/data

AN4: the upstream cepstra archive is copied unchanged; ``train.tsv`` loses the utterances of
every tenth training speaker (in sorted order), which become ``valid.tsv`` (AN4 has no dev set).
FSDD: recordings with index 0-34 of every speaker and digit are repacked into a deterministic
``recordings.tar.xz`` (index 0-4 is the official test set, 5-9 our validation set, 10-34
training); the other 1 500 training recordings are left out to keep the repository small.
"""

from __future__ import annotations

import csv
import io
import lzma
import shutil
import sys
import tarfile
from pathlib import Path

AN4_COLUMNS = ["id", "feat_path", "n_frames", "duration_s", "speaker", "transcript"]
FSDD_COLUMNS = ["path", "transcript", "digit", "speaker", "index", "duration_s"]
FSDD_LAST_INDEX = 34
FSDD_VALID = range(5, 10)
FSDD_MTIME = 1577836800  # 2020-01-01 00:00Z, as upstream packed it


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def write_tsv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(columns) + "\n")
        for row in rows:
            handle.write("\t".join(row[c] for c in columns) + "\n")


def prepare_an4(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("an4_cep.tar.xz", "LICENSE.an4", "test.tsv"):
        shutil.copyfile(source / name, target / name)
    train = read_tsv(source / "train.tsv")
    speakers = sorted({row["speaker"] for row in train})
    held_out = set(speakers[::10])
    write_tsv(target / "train.tsv", [r for r in train if r["speaker"] not in held_out], AN4_COLUMNS)
    write_tsv(target / "valid.tsv", [r for r in train if r["speaker"] in held_out], AN4_COLUMNS)


def prepare_fsdd(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "speakers.tsv", target / "speakers.tsv")
    rows = [r for r in read_tsv(source / "manifest.tsv") if int(r["index"]) <= FSDD_LAST_INDEX]
    splits = {
        "test": [r for r in rows if r["split"] == "test"],
        "valid": [r for r in rows if int(r["index"]) in FSDD_VALID],
        "train": [r for r in rows if r["split"] == "train" and int(r["index"]) not in FSDD_VALID],
    }
    for name, split_rows in splits.items():
        write_tsv(target / f"{name}.tsv", split_rows, FSDD_COLUMNS)
    wanted = {r["path"] for r in rows}
    members: dict[str, bytes] = {}
    with tarfile.open(source / "recordings.tar.xz", "r:xz") as archive:
        for member in archive:
            if member.isfile() and member.name in wanted:
                members[member.name] = archive.extractfile(member).read()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as out:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), FSDD_MTIME, 0o644
            out.addfile(info, io.BytesIO(members[name]))
    packed = lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME)
    (target / "recordings.tar.xz").write_bytes(packed)


if __name__ == "__main__":
    shared, recipes = Path(sys.argv[1]), Path(sys.argv[2])
    prepare_an4(shared / "an4", recipes / "an4")
    prepare_fsdd(shared / "fsdd", recipes / "fsdd")
