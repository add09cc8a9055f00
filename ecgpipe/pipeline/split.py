"""The `split` stage: record ids per split (a single split, or fold K of a stratified K-fold)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgpipe.core.errors import ParamsError
from ecgpipe.core.io import write_json
from ecgpipe.data.split import fold_indices, hold_out, split_indices
from ecgpipe.data.store import read_records
from ecgpipe.params import SplitParams


def run_split(params: SplitParams, spectrogram_dir: Path, out_path: Path) -> dict[str, list[str]]:
    """The `split` stage: record ids per split, written as JSON."""
    table = read_records(spectrogram_dir)
    labels = table["class_index"].to_numpy()
    if params.fold is None:
        parts = split_indices(labels, params.train, params.val, params.test, params.seed, params.stratify)
    else:
        parts = fold_indices(labels, params.folds, params.fold, params.test, params.seed)
        check_fold_count(parts, labels, table["label"].to_numpy(), params)
    if params.calibration > 0:
        parts = hold_out(parts, labels, params.calibration, params.seed)
    check_every_class(parts, labels, table["label"].to_numpy(), params)
    ids = table["record"].to_numpy()
    split = {name: ids[idx].tolist() for name, idx in parts.items()}
    write_json(out_path, split)
    return split


def check_fold_count(parts: dict[str, np.ndarray], labels: np.ndarray, names: np.ndarray, params: SplitParams) -> None:
    """Every fold of the study needs a recording of every class, not only fold ``params.fold``: more
    folds than a class has recordings outside the test split is a ParamsError naming split.folds."""
    outside_test = np.concatenate([parts["train"], parts["val"]])
    classes, counts = np.unique(labels[outside_test], return_counts=True)
    fewest = int(np.argmin(counts))
    if params.folds > counts[fewest]:
        name = names[labels == classes[fewest]][0]
        raise ParamsError(f"params: split.folds: expected at most {counts[fewest]} folds (class {name} has "
                          f"{counts[fewest]} recordings outside the test split, and every fold needs one), "
                          f"got {params.folds}")


def check_every_class(parts: dict[str, np.ndarray], labels: np.ndarray, names: np.ndarray, params: SplitParams) -> None:
    """Training and validation need a recording of every class (and the test split too, if any):
    a class missing from one is a ParamsError naming the split, the class and what would fit."""
    present = {int(c): str(n) for c, n in zip(labels, names)}
    counts = {present[c]: int((labels == c).sum()) for c in sorted(present)}
    for split in parts:
        if split == "test" and not len(parts["test"]):
            continue
        missing = [present[c] for c in sorted(present) if not (labels[parts[split]] == c).any()]
        if missing:
            where = (f"fold {params.fold} of split.folds {params.folds}" if params.fold is not None
                     else f"split {params.train:g}/{params.val:g}/{params.test:g}")
            fewest = min(counts.values())
            hint = ("use a larger split.calibration" if split == "calibration"
                    else f"use at most {fewest} folds" if params.fold is not None
                    else "use stratify: true, or larger fractions")
            raise ParamsError(f"params: split: {where} leaves no recording of class {', '.join(missing)} in {split} "
                              f"(recordings per class: {counts}); {hint}")
