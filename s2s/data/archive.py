"""Data archives (`data.<split>.archive`): a tar file a recipe ships instead of thousands of
loose files, extracted once into the run's cache.

An archive is untrusted input: members that are absolute, climb out with ``..``, or are
links or devices are refused before anything is written. Extraction goes to a temporary
folder that is renamed into place only when complete, so a killed run never leaves a
half-extracted tree that a later run would trust.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from s2s.atomic import atomic_write_bytes, write_error
from s2s.errors import S2SError

COMPLETE_MARKER = ".s2s-complete"


def archive_digest(path: Path) -> str:
    """First 16 hex digits of the archive's SHA-256 (names its extraction folder)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse a member that could write outside the extraction folder."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts:
        raise S2SError(f"{archive}: refusing member {member.name!r} (path leaves the archive)")
    if not (member.isfile() or member.isdir()):
        raise S2SError(
            f"{archive}: refusing member {member.name!r} (only files and folders are allowed)"
        )


def _extract(archive: Path, into: Path) -> int:
    """Extract every member after checking them all; returns the number of files."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_member(archive, member)
            # Python's own "data" filter (3.11.4+) checks the same again, and drops modes
            options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(into, members=members, **options)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise S2SError(f"{archive}: cannot extract: {error}") from None
    files = [m for m in members if m.isfile()]
    for member in files:  # verify: every file is there with its size
        path = into / member.name
        if not path.is_file() or path.stat().st_size != member.size:
            raise S2SError(f"{archive}: {member.name} did not extract completely")
    return len(files)


def extract_archive(archive: Path, cache_dir: Path) -> Path:
    """The folder holding ``archive``'s files, extracted into ``cache_dir`` on first use."""
    if not archive.is_file():
        raise S2SError(f"{archive}: archive not found")
    final = cache_dir / "archives" / f"{archive.name}-{archive_digest(archive)}"
    if (final / COMPLETE_MARKER).is_file():
        return final
    shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # named as s2s.atomic names temporaries, so start-up cleanup knows it
        temporary = Path(
            tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        )
    except OSError as error:
        raise write_error(final, error, kept="") from None
    try:
        count = _extract(archive, temporary)
        atomic_write_bytes(temporary / COMPLETE_MARKER, f"{count} files\n".encode())
        try:
            temporary.rename(final)
        except OSError:  # another process (s2s evaluate during training) got there first
            if not (final / COMPLETE_MARKER).is_file():
                raise S2SError(f"{final}: cannot move the extracted archive into place") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return final
