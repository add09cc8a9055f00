"""Training loaders: batches of (input, label) on the device, drawn afresh each epoch.

- ``chunked``: the balanced pre-chunked training set, shuffled each epoch.
- ``random_chunk``: each epoch, one window of ``chunk_size`` at a random offset from each
  balanced training recording (the notebook's augmentation), drawn for the whole epoch at once.
- ``random_crop``: the same on the raw signal: one crop per recording at a random sample offset,
  augmented (``ecgpipe.signal.augment``) if the experiment says so, and turned into network input by the
  model's featurizer (a raw crop, or the span of one spectrogram chunk), on the device, per batch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ecgpipe.core.io import load_tensors, read_json
from ecgpipe.data.signals import SignalSet, load_signal_set
from ecgpipe.data.store import SPECTRA_FILE, Chunks
from ecgpipe.inference.featurizers import Featurizer
from ecgpipe.inference.preprocessing import Preprocessing
from ecgpipe.signal.augment import Augmentation
from ecgpipe.signal.windows import gather_windows, sample_windows


def window_positions(signals: SignalSet, rows: torch.Tensor, featurizer: Featurizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute starts in the signal store of every scoring window of recordings ``rows``, and each
    window's recording (on the CPU)."""
    lengths = signals.lengths.cpu()
    starts = [signals.offsets[r].item() + torch.from_numpy(featurizer.window_starts(int(lengths[r])))
              for r in rows.tolist()]
    owners = torch.repeat_interleave(rows.cpu(), torch.tensor([len(s) for s in starts]))
    return torch.cat(starts), owners


@dataclass
class Spectrograms:
    """Whole spectrograms on the device, for the random-chunk loader."""

    spectra: torch.Tensor  # (n, windows, bins)
    windows: torch.Tensor  # (n,) valid windows of each
    labels: torch.Tensor  # (n,)
    balanced_train: torch.Tensor  # rows of the balanced training recordings

    @classmethod
    def load(cls, spectrogram_dir: Path, balance_path: Path, device: torch.device) -> "Spectrograms":
        data = load_tensors(Path(spectrogram_dir) / SPECTRA_FILE)
        rows = torch.tensor(read_json(balance_path)["train"], dtype=torch.long)
        return cls(data["spectra"].to(device), data["windows"].to(device), data["labels"].to(device), rows.to(device))


Batches = Callable[[torch.Generator], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def chunked_batches(train: Chunks, batch_size: int) -> Batches:
    """Each epoch: the balanced training chunks in a fresh random order."""

    def epoch(generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = train.balanced[torch.randperm(len(train.balanced), generator=generator).to(train.x.device)]
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            # index_select copies whole rows; x[idx] goes through the general, much slower indexing kernel
            yield train.x.index_select(0, idx), train.y.index_select(0, idx)

    return epoch


def random_chunk_batches(recordings: Spectrograms, chunk_size: int, batch_size: int) -> Batches:
    """Each epoch: every balanced training recording once, as one random window of ``chunk_size``."""
    rows = recordings.balanced_train
    usable = recordings.windows[rows] >= chunk_size  # a recording shorter than a chunk gives none
    rows = rows[usable]
    if len(rows) == 0:
        raise ValueError(f"no training recording has {chunk_size} windows for a chunk")

    def epoch(generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = rows.device
        order = rows[torch.randperm(len(rows), generator=generator).to(device)]
        # any start from 0 to windows - size, uniformly, for all recordings of the epoch at once
        room = (recordings.windows[order] - chunk_size + 1).to(torch.float64)
        starts = (torch.rand(len(order), generator=generator, dtype=torch.float64).to(device) * room).long()
        for start in range(0, len(order), batch_size):
            r, s = order[start : start + batch_size], starts[start : start + batch_size]
            yield gather_windows(recordings.spectra, r, s, chunk_size), recordings.labels[r]

    return epoch


def random_crop_batches(signals: SignalSet, rows: torch.Tensor, featurizer: Featurizer, batch_size: int,
                        augmentation: Augmentation | None = None) -> Batches:
    """Each epoch: every balanced training recording ``rows`` once, as one crop of the raw signal at
    a uniformly random offset (drawn for the whole epoch at once), augmented if asked, and turned
    into network input by ``featurizer`` batch by batch."""
    span = featurizer.window_samples
    drawn = span if augmentation is None else augmentation.input_samples(span)
    lengths = signals.lengths[rows]
    if bool((lengths < drawn).any()):
        short = int(lengths.min())
        raise ValueError(f"a training recording has {short} samples, fewer than the crop ({drawn}); "
                         "raise spectrogram.min_length or lower crop_samples")
    fs = featurizer.sampling_rate_hz

    def epoch(generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = rows.device
        order = rows[torch.randperm(len(rows), generator=generator).to(device)]
        room = (signals.lengths[order] - drawn + 1).to(torch.float64)
        offsets = (torch.rand(len(order), generator=generator, dtype=torch.float64).to(device) * room).long()
        starts = signals.offsets[order] + offsets
        batches = sample_windows(signals.samples, starts, drawn, batch_size)
        for start, crops in zip(range(0, len(order), batch_size), batches):
            if augmentation is not None:
                crops = augmentation.apply(crops, generator, fs, span)
            yield featurizer.from_sample_windows(crops), signals.labels[order[start : start + batch_size]]

    return epoch


# --- the loaders by name (params.yaml's experiments.NAME.loader) -------------------------------

@dataclass(frozen=True)
class LoaderSources:
    """What a loader may read: the data stages' outputs, and the training settings it needs."""

    spectrogram_dir: Path
    balance_path: Path
    chunks_dir: Path
    signals_path: Path | None
    device: torch.device
    batch_size: int
    chunk_size: int
    chunk_seed: int
    augment: Augmentation | None = None


# the preprocessing object a model trains with, from the training signals and rows where its
# featurizer normalises with their statistics (None for loaders that do not read the signals)
Featurize = Callable[[SignalSet | None, torch.Tensor | None], Preprocessing]


@dataclass
class Loader:
    batches: Batches
    inputs: list[Path]  # the files it read (MLflow lineage)
    preprocessing: Preprocessing


LOADERS: dict[str, Callable[[LoaderSources, Featurize], Loader]] = {}


def register_loader(name: str):
    def register(make: Callable[[LoaderSources, Featurize], Loader]):
        LOADERS[name] = make
        return make
    return register


@register_loader("chunked")
def chunked_loader(src: LoaderSources, featurize: Featurize) -> Loader:
    """The balanced pre-chunked training set, shuffled each epoch."""
    preprocessing = featurize(None, None)
    path = Path(src.chunks_dir) / "train.pt"
    return Loader(chunked_batches(Chunks.load(path, src.device), src.batch_size), [path], preprocessing)


@register_loader("random_chunk")
def random_chunk_loader(src: LoaderSources, featurize: Featurize) -> Loader:
    """One chunk at a random window offset from each balanced training recording, each epoch."""
    preprocessing = featurize(None, None)
    recordings = Spectrograms.load(src.spectrogram_dir, src.balance_path, src.device)
    return Loader(random_chunk_batches(recordings, src.chunk_size, src.batch_size),
                  [Path(src.spectrogram_dir) / SPECTRA_FILE, Path(src.balance_path)], preprocessing)


@register_loader("random_crop")
def random_crop_loader(src: LoaderSources, featurize: Featurize) -> Loader:
    """The raw signal: one (augmented) crop per balanced training recording, each epoch, through the
    model's featurizer."""
    if src.signals_path is None:
        raise ValueError("the random_crop loader needs the signals stage's file (--signals)")
    signals = load_signal_set(src.signals_path, src.spectrogram_dir).to(src.device)
    train_rows = torch.tensor(read_json(src.balance_path)["train"], dtype=torch.long, device=src.device)
    preprocessing = featurize(signals, train_rows)
    batches = random_crop_batches(signals, train_rows, preprocessing.featurizer, src.batch_size, src.augment)
    return Loader(batches, [Path(src.signals_path), Path(src.balance_path)], preprocessing)
