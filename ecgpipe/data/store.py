"""Where the data stages keep their outputs, and the readers the later stages share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# File names inside the spectrogram stage's output folder.
SPECTRA_FILE = "spectra.pt"  # {"spectra": (n, windows, bins) float32, "windows": (n,), "labels": (n,)}
RECORDS_FILE = "records.csv"  # record, label, class_index, samples, windows: one row per tensor row
PREPROCESSING_FILE = "preprocessing.json"  # everything that turns a raw recording into network input


def read_records(spectrogram_dir: Path) -> pd.DataFrame:
    return pd.read_csv(Path(spectrogram_dir) / RECORDS_FILE, dtype={"record": str, "label": str})


def split_rows(table: pd.DataFrame, split: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Record ids per split -> row indices into the spectrogram stage's tensors, order kept."""
    row_of = pd.Series(np.arange(len(table)), index=table["record"])
    missing = sorted({r for ids in split.values() for r in ids} - set(row_of.index))
    if missing:
        raise ValueError(
            f"the split names {len(missing)} records that the spectrogram stage did not keep, e.g. {missing[:3]}; "
            "rerun the split stage"
        )
    return {name: row_of.loc[ids].to_numpy(dtype=np.int64, copy=True) for name, ids in split.items()}
