"""Where the data stages keep their outputs, and the readers the later stages share."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ecgpipe.core.errors import StoreError
from ecgpipe.core.io import load_tensors, read_json

if TYPE_CHECKING:  # the tensors come from load_tensors: the stages that read only the tables start without torch
    import torch

# File names inside the spectrogram stage's output folder.
# {"spectra": (n, windows, bins) float32, "windows": (n,), "labels": (n,), "records_md5": md5 of records.csv}
SPECTRA_FILE = "spectra.pt"
RECORDS_FILE = "records.csv"  # record, label, class_index, samples, windows: one row per tensor row
# and, when a class is REST_LABEL, each recording's own label (label is then its class's name)
SOURCE_LABEL_COLUMN = "source_label"
PREPROCESSING_FILE = "preprocessing.json"  # everything that turns a raw recording into network input


# split.json's part of the training recordings held out of training (split.calibration), on which the
# served operating point and the temperature are fitted
CALIBRATION = "calibration"

def read_records(spectrogram_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(spectrogram_dir) / RECORDS_FILE,
                       dtype={"record": str, "label": str, SOURCE_LABEL_COLUMN: str})


def source_labels(table: pd.DataFrame) -> np.ndarray:
    """Each recording's own CinC label: its class's name, unless the classes hold REST_LABEL."""
    return table[SOURCE_LABEL_COLUMN if SOURCE_LABEL_COLUMN in table else "label"].to_numpy(dtype=str)


@dataclass
class SpectrogramSet:
    """The spectrogram stage's three files, checked to come from one run."""

    spectra: torch.Tensor  # (n, windows, bins)
    windows: torch.Tensor  # (n,)
    labels: torch.Tensor  # (n,)
    table: pd.DataFrame  # records.csv
    preprocessing: dict  # preprocessing.json


def load_spectrogram_set(spectrogram_dir: Path) -> SpectrogramSet:
    """Read ``spectra.pt``, ``records.csv`` and ``preprocessing.json``, and check that they agree
    (row count, labels, window counts, classes, shape), so that files of two different spectrogram
    runs are never combined silently."""
    folder = Path(spectrogram_dir)
    data = load_tensors(folder / SPECTRA_FILE)
    table = read_records(folder)
    preprocessing = read_json(folder / PREPROCESSING_FILE)
    spectra, windows, labels = data["spectra"], data["windows"], data["labels"]

    def mismatch(what: str) -> StoreError:
        return StoreError(f"{folder}: {what}: {SPECTRA_FILE}, {RECORDS_FILE} and {PREPROCESSING_FILE} come from "
                          "different spectrogram runs; rerun it (dvc repro spectrogram)")

    records_md5 = hashlib.md5((folder / RECORDS_FILE).read_bytes()).hexdigest()
    if not data.get("records_md5") == preprocessing.get("records_md5") == records_md5:
        raise mismatch(f"their records_md5 differ ({RECORDS_FILE}'s is {records_md5})")
    if len(table) != len(spectra):
        raise mismatch(f"{RECORDS_FILE} has {len(table)} rows, {SPECTRA_FILE} {len(spectra)} recordings")
    if not (np.array_equal(table["class_index"].to_numpy(), labels.numpy())
            and np.array_equal(table["windows"].to_numpy(), windows.numpy())):
        raise mismatch(f"the labels or window counts of {RECORDS_FILE} differ from {SPECTRA_FILE}'s")
    classes = preprocessing["classes"]
    index = table["class_index"].to_numpy()
    if index.max() >= len(classes) or (np.asarray(classes, dtype=object)[index] != table["label"].to_numpy()).any():
        raise mismatch(f"{RECORDS_FILE} has labels outside {PREPROCESSING_FILE}'s classes {classes}")
    shape = (preprocessing["n_windows_padded"], preprocessing["n_bins"])
    if tuple(spectra.shape[1:]) != shape:
        raise mismatch(f"{SPECTRA_FILE} has (windows, bins) {tuple(spectra.shape[1:])}, "
                       f"{PREPROCESSING_FILE} says {shape}")
    return SpectrogramSet(spectra, windows, labels, table, preprocessing)


def split_rows(table: pd.DataFrame, split: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Record ids per split -> row indices into the spectrogram stage's tensors, order kept."""
    row_of = pd.Series(np.arange(len(table)), index=table["record"])
    missing = sorted({r for ids in split.values() for r in ids} - set(row_of.index))
    if missing:
        raise StoreError(
            f"the split names {len(missing)} records that the spectrogram stage did not keep, e.g. {missing[:3]}; "
            "rerun the split stage"
        )
    return {name: row_of.loc[ids].to_numpy(dtype=np.int64, copy=True) for name, ids in split.items()}


@dataclass
class Chunks:
    """A split's chunks on the device, and which of them make its balanced set."""

    x: torch.Tensor  # (n, size, bins)
    y: torch.Tensor  # (n,)
    records: torch.Tensor  # (n,) row of the recording each chunk came from
    balanced: torch.Tensor  # indices into x, oversampled to equal classes

    @classmethod
    def load(cls, path: Path, device: torch.device) -> "Chunks":
        data = load_tensors(path)
        return cls(*(data[k].to(device) for k in ("chunks", "labels", "records", "balanced")))
