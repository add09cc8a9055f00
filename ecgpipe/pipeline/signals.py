"""The `signals` stage: the raw samples of the spectrogram stage's recordings, in one store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ecgpipe.core.errors import StoreError
from ecgpipe.core.io import staged_outputs, write_tensors
from ecgpipe.data.records import read_signal
from ecgpipe.data.signals import records_md5_of
from ecgpipe.data.store import RECORDS_FILE, read_records


def run_signals(records_dir: Path, spectrogram_dir: Path, out_path: Path) -> dict:
    """The `signals` stage: ``signals.pt`` for the recordings of ``records.csv``, in its order."""
    table = read_records(spectrogram_dir)
    signals = [read_signal(Path(records_dir) / f"{record}.mat") for record in table["record"]]
    for record, signal, expected in zip(table["record"], signals, table["samples"]):
        if len(signal) != expected:
            raise StoreError(f"{Path(records_dir) / record}.mat: {len(signal)} samples, {RECORDS_FILE} says "
                             f"{expected}: the records changed since the spectrogram stage; rerun it")
    samples = np.concatenate(signals)
    if samples.dtype != np.int16:
        raise StoreError(f"{records_dir}: expected int16 samples as in the CinC files, got {samples.dtype}")
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in signals])]).astype(np.int64)
    with staged_outputs() as staged:
        write_tensors(staged.file(out_path), {
            "samples": torch.from_numpy(samples),
            "offsets": torch.from_numpy(offsets),
            "labels": torch.tensor(table["class_index"].to_numpy(dtype=np.int64)),
            "records_md5": records_md5_of(spectrogram_dir),
        })
    return {"records": len(signals), "samples": int(offsets[-1])}
