"""Shared entry-point plumbing for the scripts in ``stages/`` and the ``ecgpipe`` command:
arguments, logging, and one clear line for every error a user can cause."""
from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ecgpipe.core.errors import (
    ArchiveError,
    ModelFileError,
    ParamsError,
    RecordError,
    StoreError,
    TrackingStoreError,
    TrainingError,
)
from ecgpipe.params import Params, load_params

# Errors caused by the user's input: reported as one clear line, without a traceback.
INPUT_ERRORS = (ParamsError, ArchiveError, RecordError, StoreError, TrainingError, ModelFileError, TrackingStoreError)

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error, naming the path and what to do."""
    path = exc.filename or "a file"
    if exc.errno in _DISK_FULL:
        return f"the disk is full: could not write {path} ({exc.strerror}); free some space and run again"
    if exc.errno in _NOT_WRITABLE:
        return f"{path}: not allowed ({exc.strerror}); expected a folder this user can write to"
    if isinstance(exc, FileNotFoundError):
        return f"{path}: missing ({exc.strerror}); run the stages that make it first (dvc repro)"
    if isinstance(exc, IsADirectoryError):
        return f"{path}: is a folder; expected a file"
    return f"{path}: {exc.strerror or exc}"


# DVC deletes a stage's outputs before it runs it; a failed stage leaves them deleted (README,
# "What an interrupted or failed dvc repro leaves")
RESTORE_HINT = "under dvc repro, `dvc checkout && git checkout -- metrics plots reports` restores the previous outputs"


def exit_with_error(exc: BaseException, hint: str | None = None) -> None:
    message = os_error_line(exc) if isinstance(exc, OSError) else str(exc)
    sys.exit(f"error: {message}" + (f" ({hint})" if hint else ""))


def exit_with_store_error(exc: BaseException, hint: str | None = None) -> None:
    """One line, if ``exc`` is MLflow's or SQLAlchemy's about the tracking store; else return (the
    caller re-raises: a bug keeps its traceback)."""
    from ecgpipe.tracking.runs import store_error_line

    line = store_error_line(exc)
    if line is not None:
        sys.exit(f"error: {line}" + (f" ({hint})" if hint else ""))


def exit_interrupted(stage: str) -> None:
    """Ctrl-C: one line, exit status 130 (as a shell reports SIGINT). The staged outputs were discarded on
    the way out (``core.io``), so nothing was written."""
    from ecgpipe.tracking.runs import KILLED_RUNS

    killed = f"; the MLflow run {KILLED_RUNS[-1]} is marked KILLED" if KILLED_RUNS else ""
    print(f"interrupted: {stage}; nothing written{killed}", file=sys.stderr, flush=True)
    sys.exit(130)


def run_stage(description: str, paths: list[str], body: Callable[[Params, argparse.Namespace], object],
              options: list[str] = ()) -> None:
    """Parse ``--params``, one ``--<name> PATH`` per entry of ``paths`` and one ``--<name> TEXT``
    per entry of ``options``, then run ``body``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    for name in paths:
        parser.add_argument(f"--{name}", type=Path, required=True)
    for name in options:
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        body(load_params(args.params), args)
    except KeyboardInterrupt:
        exit_interrupted(Path(sys.argv[0]).stem + (f"@{args.experiment}" if getattr(args, "experiment", None) else ""))
    except INPUT_ERRORS + (OSError,) as exc:
        exit_with_error(exc, RESTORE_HINT)
    except Exception as exc:
        exit_with_store_error(exc, RESTORE_HINT)
        raise
