"""The `spectrogram` stage: every recording's spectrogram, normalised, with its records table and data card."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import torch

from ecgpipe.core.io import json_text, staged_outputs, write_tensors
from ecgpipe.core.units import REST_LABEL, SAMPLING_RATE_HZ
from ecgpipe.data.card import class_counts, min_median_max
from ecgpipe.data.records import load_recordings
from ecgpipe.data.store import (
    PREPROCESSING_FILE,
    RECORDS_FILE,
    SOURCE_LABEL_COLUMN,
    SPECTRA_FILE,
)
from ecgpipe.params import SpectrogramParams, as_dict
from ecgpipe.signal.spectrogram import compute_spectra, fit_normalise_, window_count

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
    if REST_LABEL in recordings.class_names:  # each recording's own label: false alarms per label
        table[SOURCE_LABEL_COLUMN] = recordings.source_labels
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
