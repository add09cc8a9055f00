"""Shared entry-point plumbing for the scripts in ``stages/``: arguments, logging, clean errors."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ecgpipe.data.archive import ArchiveError
from ecgpipe.data.records import RecordError
from ecgpipe.params import Params, ParamsError, load_params

# Errors caused by the user's input: reported as one clear line, without a traceback.
INPUT_ERRORS = (ParamsError, ArchiveError, RecordError)


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
    except INPUT_ERRORS as exc:
        sys.exit(f"error: {exc}")
