"""Errors a user's input or files cause, beyond parameters and data files (which have their own in
``params`` and ``data``): each is reported as one line, without a traceback. Imports nothing heavy,
so the command line can name them without loading torch."""
from __future__ import annotations


class TrainingError(ValueError):
    """Training cannot go on: the loss is no longer finite (the learning rate is too high, or the
    inputs hold values no network can fit)."""


class ModelFileError(ValueError):
    """A model folder that this version cannot load: missing or unknown keys, other weights, a
    damaged file. The message names the file and what to do."""


class TrackingStoreError(ValueError):
    """The MLflow store cannot be used: not a database, read-only, full, or the experiment is
    deleted. The message names the store and what to do."""
