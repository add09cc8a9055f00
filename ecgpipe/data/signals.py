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

import torch

from ecgpipe.core.errors import StoreError
from ecgpipe.core.io import load_tensors
from ecgpipe.data.store import RECORDS_FILE


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


def records_md5_of(spectrogram_dir: Path) -> str:
    return hashlib.md5((Path(spectrogram_dir) / RECORDS_FILE).read_bytes()).hexdigest()


def load_signal_set(path: Path, spectrogram_dir: Path) -> SignalSet:
    """``signals.pt``, checked to follow the rows of ``spectrogram_dir``'s ``records.csv``."""
    data = load_tensors(path)
    if data.get("records_md5") != records_md5_of(spectrogram_dir):
        raise StoreError(f"{path}: made for another {Path(spectrogram_dir) / RECORDS_FILE} (records_md5 differs); "
                         "rerun the signals stage (dvc repro signals)")
    return SignalSet(data["samples"], data["offsets"], data["labels"])
