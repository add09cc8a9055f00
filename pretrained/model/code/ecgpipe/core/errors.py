"""Every error a user's input or files can cause: each is reported as one line naming the file,
record or key and what was expected, without a traceback. Imports nothing heavy, so the command
line can name them without loading torch."""
from __future__ import annotations

import typing


class TrainingError(ValueError):
    """Training cannot go on: the loss is no longer finite (the learning rate is too high, or the
    inputs hold values no network can fit)."""


class ModelFileError(ValueError):
    """A model folder that this version cannot load: missing or unknown keys, other weights, a
    damaged file. The message names the file and what to do."""


class TrackingStoreError(ValueError):
    """The MLflow store cannot be used: not a database, read-only, full, or the experiment is
    deleted. The message names the store and what to do."""


class ParamsError(ValueError):
    """A parameter is missing, unknown, of the wrong type or impossible."""


class PredictError(ValueError):
    """A recording that cannot be classified (the message says why)."""


class RecordError(ValueError):
    """A record or the reference file is missing or unreadable."""


class StoreError(ValueError):
    """A stage's input files do not belong together (outputs of different runs mixed)."""


class ArchiveError(RuntimeError):
    """The archive could not be fetched, or is not a valid CinC 2017 training archive."""


class OutputError(ValueError):
    """A file the user asked us to write cannot be written without losing something."""


class StudyError(ValueError):
    """A study that cannot be queued or reported (the message says why)."""


def fail_param(key: str, expected: str, got: typing.Any) -> typing.NoReturn:
    """The one way to refuse a parameter: ``params: KEY: expected ..., got ...``."""
    raise ParamsError(f"params: {key}: expected {expected}, got {got!r}")
