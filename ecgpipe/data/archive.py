"""The CinC 2017 archive: fetch it (or take a local copy), check it, extract its records.

``ECGPIPE_ARCHIVE=/path/to/training2017.zip`` makes the pipeline use a local archive instead
of the network; that is how offline machines and CI run it.
"""
from __future__ import annotations

import http.client
import logging
import os
import posixpath
import shutil
import socket
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ecgpipe.core.errors import ArchiveError
from ecgpipe.core.io import atomic_dir, file_digest
from ecgpipe.data.records import REFERENCE_FILE, decode_reference, parse_reference

log = logging.getLogger(__name__)

ARCHIVE_ENV = "ECGPIPE_ARCHIVE"


@dataclass(frozen=True)
class ArchiveSummary:
    path: Path
    prefix: str  # folder inside the zip that holds REFERENCE.csv ("training2017/")
    labels: dict[str, str]  # record id -> label


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def _is_unsafe_member(name: str) -> bool:
    """True for names that would land outside the extraction folder (zip slip)."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return ".." in name.replace("\\", "/").split("/")


# No real CinC 2017 entry comes near these: the largest is REFERENCE.csv (85 kB), and none
# compresses more than 4.2:1 (measured on the archive). zipfile reads no more than an entry's declared
# size (a lie about it fails the CRC), so checking the declared sizes bounds what is written.
MAX_ENTRY_BYTES = 4 << 20
MAX_COMPRESSION_RATIO = 50


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """Refuse an entry no real archive has (a zip bomb), then read it to its end, so that zipfile
    checks its CRC."""
    if info.file_size > MAX_ENTRY_BYTES or info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise ArchiveError(f"{path}: entry {info.filename!r} inflates to {info.file_size:,} bytes from "
                           f"{info.compress_size:,}; expected at most {MAX_ENTRY_BYTES:,} bytes and a ratio of "
                           f"{MAX_COMPRESSION_RATIO}:1, as every CinC 2017 file (a zip bomb, or not the CinC archive)")
    try:
        with zf.open(info) as member:
            while member.read(1 << 20):
                pass
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(f"{path}: entry {info.filename!r} is corrupt ({exc})") from None


def verify_archive(path: str | Path, sha256: str | None = None) -> ArchiveSummary:
    """Check CRCs, safe member names, REFERENCE.csv and every referenced record; return a summary."""
    path = Path(path)
    if path.is_dir():
        raise ArchiveError(f"{path}: is a folder; expected the archive file (training2017.zip)")
    if not path.is_file():
        raise ArchiveError(f"{path}: no such archive")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            raise ArchiveError(f"{path}: sha256 is {actual}, params download.sha256 expects {sha256}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            unsafe = [n for n in names if _is_unsafe_member(n)]
            if unsafe:
                raise ArchiveError(f"{path}: refusing entry {unsafe[0]!r}, which points outside the archive folder")
            for info in zf.infolist():
                _check_member(zf, info, path)
            references = [n for n in names if posixpath.basename(n) == REFERENCE_FILE]
            if len(references) != 1:
                raise ArchiveError(
                    f"{path}: expected exactly one {REFERENCE_FILE}, found {len(references)}"
                )
            prefix = references[0][: -len(REFERENCE_FILE)]
            source = f"{path}:{references[0]}"
            labels = parse_reference(decode_reference(zf.read(references[0]), source), source)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{path}: not a readable zip archive ({exc}); truncated download?") from None
    present = set(names)
    for record in labels:
        for ext in (".mat", ".hea"):
            if f"{prefix}{record}{ext}" not in present:
                raise ArchiveError(
                    f"{path}: record {record} is listed in {REFERENCE_FILE} but {prefix}{record}{ext} is missing"
                )
    return ArchiveSummary(path=path, prefix=prefix, labels=labels)


def extract_records(summary: ArchiveSummary, out_dir: str | Path) -> int:
    """Extract REFERENCE.csv and the records' .mat/.hea files, flat, into ``out_dir`` (atomically)."""
    wanted = {REFERENCE_FILE} | {f"{r}{ext}" for r in summary.labels for ext in (".mat", ".hea")}
    count = 0
    with atomic_dir(out_dir) as tmp, zipfile.ZipFile(summary.path) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(summary.prefix):
                continue
            name = info.filename[len(summary.prefix):]
            if name not in wanted:  # also skips anything in sub-folders
                continue
            with zf.open(info) as src, open(tmp / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            count += 1
    return count


def _no_network(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError)) or (
        isinstance(reason, OSError) and reason.errno in (101, 113)  # network/host unreachable
    )


def fetch(url: str, dest: str | Path, retries: int = 5, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, retries and resume of a partial file.

    The partial download is kept as ``dest + '.part'`` so that a later call resumes it with an
    HTTP Range request. With no network at all it fails at once, saying how to use a local copy.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                resumed = have and response.status == 206
                if not resumed:
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if resumed else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                    disable=None,  # quiet when not on a terminal
                ) as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
            if total is not None and part.stat().st_size != total:
                raise ArchiveError(f"{url}: got {part.stat().st_size} of {total} bytes")
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # our partial file is already complete or stale
                part.unlink()
                continue
            if exc.code < 500 and exc.code != 429:
                raise ArchiveError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            error: BaseException = exc
        except (urllib.error.URLError, OSError, http.client.HTTPException, ArchiveError) as exc:
            if _no_network(exc):
                raise ArchiveError(
                    f"cannot reach {url} ({getattr(exc, 'reason', exc)}). With no network, point the "
                    f"pipeline at a local copy: {ARCHIVE_ENV}=/path/to/training2017.zip dvc repro"
                ) from None
            error = exc
        if attempt < retries:
            time.sleep(min(2**attempt, 30))
    raise ArchiveError(f"{url}: download failed after {retries + 1} attempts ({error})")


def obtain_archive(url: str, download_dir: str | Path, retries: int = 5,
                   timeout_s: float = 60.0) -> tuple[Path, bool]:
    """The local archive named by ``ECGPIPE_ARCHIVE``, else the one downloaded from ``url``.

    Returns the path and whether it is the stage's own download (which it may delete); a file
    that the user named is never ours to delete, wherever it lies.
    """
    local = os.environ.get(ARCHIVE_ENV)
    if local:
        path = Path(local).expanduser()
        if path.is_dir():
            raise ArchiveError(f"{ARCHIVE_ENV}={local}: is a folder; expected the archive file (training2017.zip)")
        if not path.is_file():
            raise ArchiveError(f"{ARCHIVE_ENV}={local}: no such file")
        return path, False
    dest = Path(download_dir) / posixpath.basename(url)
    if dest.is_file():
        return dest, True
    return fetch(url, dest, retries=retries, timeout_s=timeout_s), True


