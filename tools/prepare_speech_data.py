"""Build the speech recipes' shipped data from the corpora in ../shared/data.

    python tools/prepare_speech_data.py ../shared/data recipes/data

AN4: the upstream cepstra archive is copied unchanged; ``train.tsv`` loses the utterances of
every tenth training speaker (in sorted order), which become ``valid.tsv`` (AN4 has no dev set).
FSDD: all 3 000 recordings are re-encoded losslessly as FLAC (the ``flac`` command-line
encoder, which packs these short clips about 5 % smaller than libsndfile does; every file is
checked to decode to exactly the samples of its wav) and packed into a deterministic
``recordings.tar.xz``. Index 0-4 is the official test set; validation is index 45-49, not the
5-9 next to the test set: a speaker's early recordings can differ from his later ones (nicolas
says "eight" in 0.24-0.29 s in 0-9, 0.4 s after), so training keeps 5-44, the ones nearest the
test set's. As wav the recordings did not fit the repository's size budget.
"""

from __future__ import annotations

import csv
import io
import lzma
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

AN4_COLUMNS = ["id", "feat_path", "n_frames", "duration_s", "speaker", "transcript"]
FSDD_COLUMNS = ["path", "transcript", "digit", "speaker", "index", "duration_s"]
FSDD_VALID = range(45, 50)
FSDD_MTIME = 1577836800  # 2020-01-01 00:00Z, as upstream packed it
# 1152-sample blocks suit 0.1-2 s clips better than flac's default 4096 (-e -p: exhaustive search)
FLAC_COMMAND = ["flac", "-8", "-e", "-p", "-b", "1152", "--no-padding", "--no-seektable"]


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


def flac_of_wav(name: str, wav: bytes) -> bytes:
    """``wav`` encoded as FLAC, after checking that it decodes to exactly the same samples."""
    import numpy as np
    import soundfile

    try:
        done = subprocess.run(
            [*FLAC_COMMAND, "--silent", "--stdout", "-"], input=wav, capture_output=True, check=True
        )
    except FileNotFoundError:
        sys.exit("prepare_speech_data: the 'flac' encoder is needed (apt-get install flac)")
    except subprocess.CalledProcessError as error:
        sys.exit(f"prepare_speech_data: flac failed on {name}: {error.stderr.decode().strip()}")
    original, rate = soundfile.read(io.BytesIO(wav), dtype="int16", always_2d=True)
    decoded, decoded_rate = soundfile.read(io.BytesIO(done.stdout), dtype="int16", always_2d=True)
    if decoded_rate != rate or not np.array_equal(decoded, original):
        sys.exit(f"prepare_speech_data: {name}: the FLAC file does not decode to the wav's samples")
    return done.stdout


def prepare_fsdd(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "speakers.tsv", target / "speakers.tsv")
    rows = read_tsv(source / "manifest.tsv")
    members: dict[str, bytes] = {}
    with tarfile.open(source / "recordings.tar.xz", "r:xz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".wav"):
                flac = flac_of_wav(member.name, archive.extractfile(member).read())
                members[member.name.removesuffix(".wav") + ".flac"] = flac
    for row in rows:
        row["path"] = row["path"].removesuffix(".wav") + ".flac"
        if row["path"] not in members:
            sys.exit(f"prepare_speech_data: {row['path']} is in manifest.tsv, not in the archive")
    splits = {
        "test": [r for r in rows if r["split"] == "test"],
        "valid": [r for r in rows if int(r["index"]) in FSDD_VALID],
        "train": [r for r in rows if r["split"] == "train" and int(r["index"]) not in FSDD_VALID],
    }
    for name, split_rows in splits.items():
        write_tsv(target / f"{name}.tsv", split_rows, FSDD_COLUMNS)
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
