"""The raw signals of the spectrogram stage's recordings, in one tensor: what raw-signal networks train on.

Reading 5,000-8,500 ``.mat`` files takes tens of seconds; an epoch of random crops takes a few.
The ``signals`` stage reads them once into ``signals.pt``: every recording's samples one after
the other (int16, as in the files: about 150 MB for all 8,528), their ``offsets`` (n + 1), and the
``records_md5`` of the spectrogram stage's ``records.csv``, whose rows they follow, so that the
split and balance stages' row indices address both.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecgpipe.data.records import read_signal
from ecgpipe.data.store import RECORDS_FILE, StoreError, read_records
from ecgpipe.io import load_tensors, staged_outputs, write_tensors


@dataclass
class SignalSet:
    samples: torch.Tensor  # (total samples,) every recording's samples, concatenated in row order
    offsets: torch.Tensor  # (n + 1,) recording i is samples[offsets[i]:offsets[i + 1]]
    labels: torch.Tensor  # (n,)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def to(self, device: torch.device) -> "SignalSet":
        return SignalSet(self.samples.to(device), self.offsets.to(device), self.labels.to(device))


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
            "records_md5": _records_md5(spectrogram_dir),
        })
    return {"records": len(signals), "samples": int(offsets[-1])}


def _records_md5(spectrogram_dir: Path) -> str:
    return hashlib.md5((Path(spectrogram_dir) / RECORDS_FILE).read_bytes()).hexdigest()


def load_signal_set(path: Path, spectrogram_dir: Path) -> SignalSet:
    """``signals.pt``, checked to follow the rows of ``spectrogram_dir``'s ``records.csv``."""
    data = load_tensors(path)
    if data.get("records_md5") != _records_md5(spectrogram_dir):
        raise StoreError(f"{path}: made for another {Path(spectrogram_dir) / RECORDS_FILE} (records_md5 differs); "
                         "rerun the signals stage (dvc repro signals)")
    return SignalSet(data["samples"], data["offsets"], data["labels"])
