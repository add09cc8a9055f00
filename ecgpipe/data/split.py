"""Split recordings (not chunks) into train / validation / test, so no recording is in two sets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ecgpipe.data.store import read_records
from ecgpipe.io import write_json
from ecgpipe.params import ParamsError, SplitParams

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


def check_every_class(parts: dict[str, np.ndarray], labels: np.ndarray, names: np.ndarray, params: SplitParams) -> None:
    """Training and validation need a recording of every class (and the test split too, if any):
    a class missing from one is a ParamsError naming the split, the class and what would fit."""
    present = {int(c): str(n) for c, n in zip(labels, names)}
    counts = {present[c]: int((labels == c).sum()) for c in sorted(present)}
    for split in ("train", "val", "test"):
        if split == "test" and not len(parts["test"]):
            continue
        missing = [present[c] for c in sorted(present) if not (labels[parts[split]] == c).any()]
        if missing:
            where = (f"fold {params.fold} of split.folds {params.folds}" if params.fold is not None
                     else f"split {params.train:g}/{params.val:g}/{params.test:g}")
            fewest = min(counts.values())
            hint = (f"use at most {fewest} folds" if params.fold is not None
                    else "use stratify: true, or larger fractions")
            raise ParamsError(f"params: split: {where} leaves no recording of class {', '.join(missing)} in {split} "
                              f"(recordings per class: {counts}); {hint}")


def run_split(params: SplitParams, spectrogram_dir: Path, out_path: Path) -> dict[str, list[str]]:
    """The `split` stage: record ids per split, written as JSON."""
    table = read_records(spectrogram_dir)
    labels = table["class_index"].to_numpy()
    if params.fold is None:
        parts = split_indices(labels, params.train, params.val, params.test, params.seed, params.stratify)
    else:
        parts = fold_indices(labels, params.folds, params.fold, params.test, params.seed)
    check_every_class(parts, labels, table["label"].to_numpy(), params)
    ids = table["record"].to_numpy()
    split = {name: ids[idx].tolist() for name, idx in parts.items()}
    write_json(out_path, split)
    return split
