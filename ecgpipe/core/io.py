"""Atomic, deterministic output writing and safe tensor loading.

Every output is written under a temporary name beside its final path and swapped into place only
when it is complete, so an interrupted or failed stage never leaves a half-written output that
looks valid. A stage with several outputs stages all of them first and swaps them in together at
the end (:func:`staged_outputs`); files that a reader uses together live in one folder, which is
swapped in one step (an atomic exchange on Linux), so a reader never sees half of an old and half
of a new set. Temporary files and folders get the user's umask, like any other tool's output.

Tensor files are byte-deterministic: the same tensors give the same bytes, whatever the path.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecgpipe.core.errors import OutputError

if TYPE_CHECKING:  # torch (about a second) is imported by the two functions that need it
    import torch


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def remove_leftover_temps(path: Path) -> None:
    """Delete the temporary siblings of ``path`` that a killed run left (SIGKILL runs no clean-up).

    Only names of :func:`_temp_name`'s exact form are touched; one stage is the only writer of its
    outputs, so no live writer owns them.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:  # no folder yet, or not readable: nothing of ours to clean
        return
    for sibling in siblings:
        if pattern.fullmatch(sibling.name):
            _remove(sibling)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2  # <linux/fs.h>: swap two paths atomically
_AT_FDCWD = -100


def _renameat2():
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name, use_errno=True).renameat2 if name else None
    except (OSError, AttributeError):  # not glibc >= 2.28 (macOS, musl, Windows)
        return None
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one atomic step; False where the system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    return False  # e.g. a file system without RENAME_EXCHANGE: fall back to two renames


def replace_path(tmp: Path, path: Path) -> None:
    """Put the finished ``tmp`` (a file or a folder) at ``path``, replacing what was there.

    A file replaces a file atomically (``os.replace``). A folder is exchanged with the old one in
    one step where Linux allows it; elsewhere the old one is first renamed aside, so a reader
    sees the old set, then briefly none, then the new one, and never a mix.
    """
    if not path.exists() and not path.is_symlink():
        os.replace(tmp, path)
        return
    if not tmp.is_dir() and not path.is_dir():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):
        _remove(tmp)  # now the old content
        return
    aside = _temp_name(path)
    os.replace(path, aside)
    os.replace(tmp, path)
    _remove(aside)


class StagedOutputs:
    """A stage's outputs, written under temporary names and swapped in only when all are complete."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def file(self, path: str | Path) -> Path:
        """A temporary file path to write ``path``'s content to."""
        path = Path(path)
        tmp = _temp_name(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_leftover_temps(path)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode 0666 less the umask
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        self._pending.append((tmp, path))
        return tmp

    def dir(self, path: str | Path) -> Path:
        """An empty temporary folder to write ``path``'s content into."""
        path = Path(path)
        tmp = _temp_name(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_leftover_temps(path)
            tmp.mkdir(0o777)  # less the umask
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        self._pending.append((tmp, path))
        return tmp

    def commit(self) -> None:
        for tmp, path in self._pending:
            replace_path(tmp, path)
        self._pending.clear()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            _remove(tmp)
        self._pending.clear()

    def name_output(self, exc: OSError) -> OSError:
        """``exc`` naming the output it concerns, not a temporary name (or no name, as a failed
        write to an open file gives)."""
        finals = {str(tmp): str(path) for tmp, path in self._pending}
        name = exc.filename
        for tmp, final in finals.items():
            if name is not None and str(name).startswith(tmp):
                name = final
                break
        else:
            if name is None and finals:
                name = ", ".join(finals.values())
        if name == exc.filename or exc.errno is None:  # nothing to rename, or no errno to rebuild it with
            return exc
        return type(exc)(exc.errno, exc.strerror, name)


@contextlib.contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """Stage several outputs; they replace the old ones only if the whole block succeeds."""
    staged = StagedOutputs()
    try:
        yield staged
        staged.commit()
    except OSError as exc:
        raise staged.name_output(exc) from exc
    finally:
        staged.discard()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    with staged_outputs() as staged:
        yield staged.file(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    with staged_outputs() as staged:
        yield staged.dir(path)


def user_output(path: str | Path, option: str, inputs: list[str | Path] = (),
                protected: list[str | Path] = ()) -> Path:
    """Check a user-named output file (``--out``, ``--json``) before any work; return where to write.

    A symlink is written through (its target is replaced, as any Unix tool does). Refused, so that
    nothing the user has is lost and nothing hangs: a folder, one of the call's own ``inputs``, a
    path inside a ``protected`` folder (the model being used), and anything but a regular file, a
    character device (``/dev/null``, a terminal) or a FIFO.
    """
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    if target.is_dir():
        raise OutputError(f"{option} {path}: is a folder; expected the path of a file to write")
    resolved = target.resolve()
    for folder in protected:
        folder = Path(folder).resolve()
        if resolved == folder or folder in resolved.parents:
            raise OutputError(f"{option} {path}: is inside the model folder {folder}; writing there would replace "
                              "the model's own files: choose a path outside it")
    if target.exists():
        mode = target.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            raise OutputError(f"{option} {path}: is not a regular file, a character device or a FIFO; expected the "
                              "path of a file to write")
        for source in inputs:
            try:
                same = os.path.samefile(target, source)
            except OSError:  # an input that does not exist is that input's own error
                continue
            if same:
                raise OutputError(f"{option} {path}: is one of the inputs ({source}); choose another file to write")
    return target


FIFO_READER_WAIT_S = 2.0  # a reader started beside the command (cat fifo & ecgpipe ...) opens within this


def _open_special(target: Path):
    """A device or FIFO opened for writing without blocking: a FIFO whose reader has not opened it
    within FIFO_READER_WAIT_S is an OutputError (a plain open would wait forever)."""
    deadline = time.monotonic() + FIFO_READER_WAIT_S
    while True:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise type(exc)(exc.errno, exc.strerror, str(target)) from None
            if time.monotonic() > deadline:
                raise OutputError(f"{target}: a FIFO with no reader; start its reader first (none opened it "
                                  f"within {FIFO_READER_WAIT_S:g} s), or write to a file") from None
            time.sleep(0.02)
    os.set_blocking(fd, True)  # a reader is there: write all of it, at the reader's pace
    return os.fdopen(fd, "w")


def write_user_output(target: Path, text: str) -> None:
    """Write ``text`` to a :func:`user_output` target: a regular file by rename, whole or not at all,
    keeping the mode (and, where allowed, the owner) of the file it replaces; a device or FIFO
    (``/dev/null``, a pipe) in place, since renaming over it would replace it."""
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    if old is not None and not stat.S_ISREG(old.st_mode):
        try:
            with _open_special(target) as f:
                f.write(text)
        except OSError as exc:  # a failed write names no file (/dev/full): name the target
            raise type(exc)(exc.errno, exc.strerror, str(target)) from None
        return
    with atomic_path(target) as tmp:
        if old is not None:  # private results stay private: the old file's mode before any byte is written
            os.chmod(tmp, stat.S_IMODE(old.st_mode) | stat.S_IWUSR)  # (+ our own write, for a read-only one)
        tmp.write_text(text)
        if old is not None:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
            with contextlib.suppress(PermissionError):  # only root may give a file to another user
                os.chown(tmp, old.st_uid, old.st_gid)


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """The hex digest of a file's bytes (md5: what DVC 3 records for a file in dvc.lock)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_tensors(path: str | Path, tensors: Any) -> None:
    """``torch.save`` of ``tensors`` to ``path`` (a temporary name inside a staged output), in
    bytes that depend on the tensors only.

    Saved to a path, the zip archive's inner folder is named after the file, so a temporary name
    would change the bytes (and DVC's hash) on every run; in memory it is always ``archive``.
    Writing the bytes ourselves also gives a full disk its own error (torch reports a RuntimeError).
    """
    import torch

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    Path(path).write_bytes(buffer.getvalue())


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    import torch

    # weights_only: a tensor file must never be able to run code when loaded.
    return torch.load(path, map_location="cpu", weights_only=True)
