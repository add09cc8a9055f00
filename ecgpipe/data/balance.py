"""Class balancing by oversampling: repeat minority-class items until every class has as many."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgpipe.data.store import read_records, split_rows
from ecgpipe.io import read_json, write_json
from ecgpipe.params import BalanceParams

# Splits that training balances (the notebook balances both, so its accuracies compare).
BALANCED_SPLITS = ("train", "val")


def oversample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``labels``: all of them in order, then extra copies of each smaller class.

    As the notebook's ``balance_dataset``, a class that needs more than its own size is repeated
    whole in fresh random orders and then topped up with a random subset, so copies are spread
    evenly. Done with array operations: no loop over samples.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max() if len(counts) else 0
    extra = [np.arange(len(labels))]
    for label, count in zip(classes, counts):
        need = target - count
        if need == 0:
            continue
        members = np.flatnonzero(labels == label)
        rounds, rest = divmod(need, count)
        if rounds:
            extra.append(rng.permuted(np.tile(members, (rounds, 1)), axis=1).ravel())
        if rest:
            extra.append(rng.permutation(members)[:rest])
    return np.concatenate(extra)


def run_balance(params: BalanceParams, spectrogram_dir: Path, split_path: Path, out_path: Path) -> dict:
    """The `balance` stage: oversampled row indices (into the spectrogram tensors) per split."""
    table = read_records(spectrogram_dir)
    rows = split_rows(table, read_json(split_path))
    labels = table["class_index"].to_numpy()
    rng = np.random.default_rng(params.seed)
    balanced = {name: rows[name][oversample(labels[rows[name]], rng)].tolist() for name in BALANCED_SPLITS}
    write_json(out_path, balanced)
    return balanced
