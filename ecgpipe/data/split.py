"""Split recordings (not chunks) into train / validation / test, so no recording is in two sets."""
from __future__ import annotations

import numpy as np
import torch

from ecgpipe.data.store import CALIBRATION

SPLITS = ("train", "val", "test")


def _cut(perm: np.ndarray, train: float, test: float) -> dict[str, np.ndarray]:
    # int() truncation as the notebook's ``int(0.8 * len(data))``; validation takes the rest.
    n_train, n_test = int(train * len(perm)), int(test * len(perm))
    n_val = len(perm) - n_train - n_test
    return {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}


def split_indices(
    labels: np.ndarray, train: float, val: float, test: float = 0.0, seed: int = 12345, stratify: bool = False
) -> dict[str, np.ndarray]:
    """Indices of ``labels`` per split, in random order; deterministic for a seed.

    Unstratified, this is ``torch.utils.data.random_split`` after ``torch.manual_seed(seed)``
    (a ``randperm`` from that seed), which reproduces the notebook's split exactly. Stratified,
    each class is permuted and cut by the same fractions.
    """
    del val  # the rest after train and test; params validation guarantees the sum is 1
    generator = torch.Generator().manual_seed(seed)
    if not stratify:
        perm = torch.randperm(len(labels), generator=generator).numpy()
        return _cut(perm, train, test)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        perm = members[torch.randperm(len(members), generator=generator).numpy()]
        for name, idx in _cut(perm, train, test).items():
            parts[name].append(idx)
    return _interleave(parts, seed)


def _interleave(parts: dict[str, list[np.ndarray]], seed: int) -> dict[str, np.ndarray]:
    """Each split's per-class index arrays as one array, the classes shuffled together (seeded)."""
    order = torch.Generator().manual_seed(seed + 1)
    out = {}
    for name, chunks in parts.items():
        idx = np.concatenate(chunks)
        out[name] = idx[torch.randperm(len(idx), generator=order).numpy()]
    return out


def fold_indices(labels: np.ndarray, folds: int, fold: int, test: float = 0.0, seed: int = 12345) -> dict[str, np.ndarray]:
    """Stratified K-fold: indices per split with fold ``fold`` as validation; deterministic for a seed.

    The test fraction of each class is held out first (the same for every fold). The rest of each
    class is permuted and dealt round-robin into the folds, so every fold has each class's share
    to within one recording, the folds are disjoint, and together they cover every non-test
    recording once.
    """
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[torch.randperm(len(members), generator=generator).numpy()]
        n_test = int(test * len(members))
        parts["test"].append(members[:n_test])
        rest = members[n_test:]
        in_fold = np.arange(len(rest)) % folds == fold
        parts["val"].append(rest[in_fold])
        parts["train"].append(rest[~in_fold])
    return _interleave(parts, seed)




def hold_out(parts: dict[str, np.ndarray], labels: np.ndarray, fraction: float, seed: int) -> dict[str, np.ndarray]:
    """``fraction`` of each class's training recordings moved to ``CALIBRATION`` (at least one of a
    class that has two or more), the rest kept in training, each in its order; deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed + 2)
    train = parts["train"]
    chosen = []
    for label in np.unique(labels[train]):
        members = np.flatnonzero(labels[train] == label)
        n = max(int(fraction * len(members)), 1 if len(members) > 1 else 0)
        chosen.append(members[torch.randperm(len(members), generator=generator).numpy()[:n]])
    held = np.zeros(len(train), dtype=bool)
    held[np.concatenate(chosen)] = True
    return {**parts, "train": train[~held], CALIBRATION: train[held]}
