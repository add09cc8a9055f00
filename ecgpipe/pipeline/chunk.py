"""The `chunk` stage: each split's recordings cut into chunks of consecutive spectrogram windows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ecgpipe.core.errors import ParamsError
from ecgpipe.core.io import json_text, read_json, staged_outputs, write_tensors
from ecgpipe.data.balance import oversample
from ecgpipe.data.card import class_counts
from ecgpipe.data.store import load_spectrogram_set, split_rows
from ecgpipe.params import ChunkParams
from ecgpipe.signal.windows import chunk_positions, gather_windows


def run_chunk(
    params: ChunkParams, spectrogram_dir: Path, split_path: Path, balance_path: Path, out_dir: Path, metrics_path: Path
) -> dict:
    """The `chunk` stage: ``<split>.pt`` per split in ``out_dir``, and record and chunk counts as metrics.

    Each file holds ``chunks`` (n, size, bins), their ``labels``, ``records`` (row into the
    spectrogram tensors) and ``starts`` (first window), and ``balanced``: indices into the
    chunks, oversampled so every class has as many (the notebook's balanced chunk set).
    """
    spectrogram = load_spectrogram_set(spectrogram_dir)
    class_names = spectrogram.preprocessing["classes"]
    rows = split_rows(spectrogram.table, read_json(split_path))
    balanced_rows = read_json(balance_path)
    spectra, windows, labels = spectrogram.spectra, spectrogram.windows, spectrogram.labels
    _check_size(params.size, {name: windows[torch.from_numpy(r)] for name, r in rows.items() if len(r)})
    rng = np.random.default_rng(params.seed)
    card, outputs = {}, {}
    for name, split_row in rows.items():
        if len(split_row) == 0:  # no test split unless params ask for one
            continue
        split_row = torch.from_numpy(split_row)
        chunk_rows, starts = chunk_positions(split_row, windows, params.size)
        chunk_labels = labels[chunk_rows]
        # balanced again after chunking, as the notebook: longer recordings give more chunks
        balanced = torch.from_numpy(oversample(chunk_labels.numpy(), rng))
        outputs[name] = {
            "chunks": gather_windows(spectra, chunk_rows, starts, params.size),
            "labels": chunk_labels,
            "records": chunk_rows,
            "starts": starts,
            "balanced": balanced,
        }
        card[name] = {
            "records": class_counts(labels[split_row].numpy(), class_names),
            **({"balanced_records": class_counts(labels[balanced_rows[name]].numpy(), class_names)}
               if name in balanced_rows else {}),
            "chunks": class_counts(chunk_labels.numpy(), class_names),
            "balanced_chunks": class_counts(chunk_labels[balanced].numpy(), class_names),
        }
    with staged_outputs() as staged:
        folder = staged.dir(out_dir)
        for name, tensors in outputs.items():
            write_tensors(folder / f"{name}.pt", tensors)
        staged.file(metrics_path).write_text(json_text(card))
    return card


def _check_size(size: int, windows_per_split: dict[str, torch.Tensor]) -> None:
    """Every split must give at least one chunk: a chunk longer than all of a split's recordings
    would leave it empty, and training or evaluation would fail much later."""
    for name, windows in windows_per_split.items():
        longest = int(windows.max())
        if longest < size:
            raise ParamsError(
                f"params: chunk.size: expected at most {longest} windows (the longest {name} recording's "
                f"window count), got {size}: the {name} split would have no chunk"
            )
