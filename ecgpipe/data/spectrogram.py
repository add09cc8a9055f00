"""Spectrograms of padded recordings, normalised per frequency, as the notebook computes them."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.signal
import torch

from ecgpipe.data.card import class_counts, min_median_max
from ecgpipe.data.records import SAMPLING_RATE_HZ, load_recordings
from ecgpipe.data.store import PREPROCESSING_FILE, RECORDS_FILE, SPECTRA_FILE
from ecgpipe.io import json_text, staged_outputs, write_tensors
from ecgpipe.params import SpectrogramParams, as_dict


def window_count(n_samples: np.ndarray | int, nperseg: int, noverlap: int) -> np.ndarray | int:
    """Windows per recording, by the notebook's formula ``(length - nperseg) // (nperseg - noverlap)``.

    It counts one window fewer than fit in the recording (scipy makes ``... + 1``); we keep the
    notebook's count so that chunk counts and figures match it.
    """
    return (n_samples - nperseg) // (nperseg - noverlap)


def compute_spectra(
    signals: np.ndarray, nperseg: int, noverlap: int, scaling: str = "spectrum", batch_size: int = 256
) -> np.ndarray:
    """Spectrograms of ``signals`` (n, samples) as float32 (n, windows, bins), C-contiguous.

    scipy is called on ``batch_size`` recordings at a time, at a fraction of the memory and time of
    one call, because scipy's intermediate arrays for 5,000+ recordings no longer fit the CPU
    caches. The values equal one call's to float32 rounding; on some CPUs bit for bit, but that is
    the kernels' business, so ``batch_size`` is a DVC param of the stage.
    """
    n = signals.shape[0]
    n_windows = (signals.shape[1] - noverlap) // (nperseg - noverlap)
    out = np.empty((n, n_windows, nperseg // 2 + 1), dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = signals[start : start + batch_size].astype(np.float32)
        _, _, sxx = scipy.signal.spectrogram(batch, scaling=scaling, nperseg=nperseg, noverlap=noverlap)
        out[start : start + batch_size] = sxx.transpose(0, 2, 1)
    return out


@dataclass(frozen=True)
class Normalisation:
    """Per-frequency statistics: ``(spectrum - mean) / std`` gives the network's input."""

    mean: np.ndarray  # (bins,) float64
    std: np.ndarray  # (bins,) float64

    def apply_(self, spectra: np.ndarray) -> np.ndarray:
        """Normalise float32 ``spectra`` (n, windows, bins) in place and return it."""
        spectra -= self.mean.astype(spectra.dtype)
        spectra /= self.std.astype(spectra.dtype)
        return spectra

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> "Normalisation":
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64))


def fit_normalise_(spectra: np.ndarray, stats_dtype: str = "float32") -> Normalisation:
    """Normalise each frequency of ``spectra`` over all recordings and windows, in place.

    ``stats_dtype="float32"`` accumulates exactly as the notebook's numpy calls on its
    (n, bins, windows) view, bit for bit, so the data card reproduces its figures;
    ``"float64"`` gives the exact mean and standard deviation.
    """
    view = spectra.transpose(0, 2, 1)  # the notebook's layout: reduce over recordings and windows
    if stats_dtype == "float32":
        mean = np.mean(view, axis=(0, 2), keepdims=True)
        view -= mean
        std = np.std(view, axis=(0, 2), keepdims=True)
        view /= std
    elif stats_dtype == "float64":
        mean = np.mean(view, axis=(0, 2), keepdims=True, dtype=np.float64)
        view -= mean.astype(np.float32)
        # after exact centring, the float64 second moment is the variance
        std = np.sqrt(np.mean(np.square(view, dtype=np.float64), axis=(0, 2), keepdims=True))
        view /= std.astype(np.float32)
    else:
        raise ValueError(f"stats_dtype must be 'float32' or 'float64', got {stats_dtype!r}")
    if not np.all(std > 0):
        raise ValueError("a frequency bin has zero variance over all recordings; cannot normalise")
    return Normalisation(mean.ravel().astype(np.float64), std.ravel().astype(np.float64))


# settings of the computation or of the records' selection, not of the features: kept out of the
# preprocessing record, which every model carries (the stage's own DVC params still list them)
NOT_FEATURES = ("batch_size", "flat_records")


def run_spectrogram(params: SpectrogramParams, records_dir: Path, out_dir: Path, metrics_path: Path) -> dict:
    """The `spectrogram` stage: tensors, record table, preprocessing settings, and the data card."""
    recordings = load_recordings(records_dir, params.classes, params.min_length, params.max_length,
                                 params.flat_records)
    spectra = compute_spectra(recordings.signals, params.nperseg, params.noverlap, params.scaling, params.batch_size)
    del recordings.signals  # the largest array; the spectra replace it
    normalisation = fit_normalise_(spectra, params.stats_dtype)
    windows = window_count(recordings.lengths, params.nperseg, params.noverlap)
    spectra_t = torch.from_numpy(spectra)

    table = pd.DataFrame({
        "record": recordings.record_ids,
        "label": [recordings.class_names[i] for i in recordings.labels],
        "class_index": recordings.labels,
        "samples": recordings.lengths,
        "windows": windows,
    })
    records_csv = table.to_csv(index=False)
    # one id for the set, in two of its files: a reader can tell files of two runs apart
    records_md5 = hashlib.md5(records_csv.encode()).hexdigest()
    preprocessing = {
        "sampling_rate_hz": SAMPLING_RATE_HZ,
        **{k: v for k, v in as_dict(params).items() if k not in NOT_FEATURES},
        "n_windows_padded": spectra.shape[1],
        "n_bins": spectra.shape[2],
        "normalisation": normalisation.to_dict(),
        "records_md5": records_md5,
    }
    counts = class_counts(recordings.labels, recordings.class_names)
    n_records = counts.pop("total")
    card = {
        "n_records": n_records,
        "class_counts": counts,
        "class_proportions": {k: round(v / n_records, 6) for k, v in counts.items()},
        "samples": min_median_max(recordings.lengths),
        "windows": min_median_max(windows),
        "n_bins": int(spectra.shape[2]),
        # over the whole padded tensor in float32, as the notebook's torch.mean / torch.std
        "mean": round(float(torch.mean(spectra_t)), 6),
        "std": round(float(torch.std(spectra_t)), 6),
    }
    # the three files are read together: they are written into one folder that replaces the old
    # one in a single step, so no reader ever sees a new spectra.pt beside an old records.csv
    with staged_outputs() as staged:
        folder = staged.dir(out_dir)
        write_tensors(folder / SPECTRA_FILE, {
            "spectra": spectra_t,
            "windows": torch.from_numpy(windows),
            "labels": torch.from_numpy(recordings.labels),
            "records_md5": records_md5,
        })
        (folder / RECORDS_FILE).write_text(records_csv)
        (folder / PREPROCESSING_FILE).write_text(json_text(preprocessing))
        staged.file(metrics_path).write_text(json_text(card))
    return card
