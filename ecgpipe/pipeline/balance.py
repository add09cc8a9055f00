"""The `balance` stage: oversampled record indices for the training and validation splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgpipe.core.io import read_json, write_json
from ecgpipe.data.balance import BALANCED_SPLITS, oversample
from ecgpipe.data.store import read_records, split_rows
from ecgpipe.params import BalanceParams


def run_balance(params: BalanceParams, spectrogram_dir: Path, split_path: Path, out_path: Path) -> dict:
    """The `balance` stage: oversampled row indices (into the spectrogram tensors) per split."""
    table = read_records(spectrogram_dir)
    rows = split_rows(table, read_json(split_path))
    labels = table["class_index"].to_numpy()
    rng = np.random.default_rng(params.seed)
    balanced = {name: rows[name][oversample(labels[rows[name]], rng)].tolist() for name in BALANCED_SPLITS}
    write_json(out_path, balanced)
    return balanced
