"""Training loaders: batches of (input, label) on the device, drawn afresh each epoch.

- ``chunked``: the balanced pre-chunked training set, shuffled each epoch.
- ``random_chunk``: each epoch, one window of ``chunk_size`` at a random offset from each
  balanced training recording (the notebook's augmentation), drawn for the whole epoch at once.
- ``random_crop``: the same on the raw signal: one crop per recording at a random sample offset,
  augmented (``ecgpipe.signal.augment``) if the experiment says so, and turned into network input by the
  model's featurizer (a raw crop, or the span of one spectrogram chunk), on the device, per batch.

The two that draw from recordings also take ``class_balance: loss_weights`` (:func:`class_balance`):
the recordings in their natural shares and a class-weighted loss, in place of the balance stage's copies.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ecgpipe.core.io import load_tensors, read_json
from ecgpipe.data.balance import inverse_share_weights
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


@dataclass(frozen=True)
class ClassBalance:
    """How a loader evens out the classes: the rows an epoch draws from (each at most as often as it is
    listed), how many it draws, and the loss's weight per class (None: unweighted)."""

    rows: torch.Tensor
    epoch_size: int
    class_weights: torch.Tensor | None = None


def class_balance(balanced_rows: torch.Tensor, labels: torch.Tensor, n_classes: int, how: str) -> ClassBalance:
    """``oversample``: the balance stage's rows ``balanced_rows`` (minority classes copied), each once an
    epoch. ``loss_weights``: each training recording (a distinct row of them) in its natural share, listed
    often enough that an epoch draws as many as the balanced set has (the same number of steps, so the
    two recipes differ only in the classes' mix), and the loss weighted by the inverse of each class's
    share of the training recordings (``labels``: every row's class)."""
    if how == "oversample":
        return ClassBalance(balanced_rows, len(balanced_rows))
    if how != "loss_weights":
        raise ValueError(f"unknown class_balance {how!r}; expected oversample or loss_weights")
    natural = torch.unique(balanced_rows)
    copies = -(-len(balanced_rows) // len(natural))
    weights = inverse_share_weights(labels[natural].cpu().numpy(), n_classes)
    return ClassBalance(natural.repeat(copies), len(balanced_rows),
                        torch.as_tensor(weights, dtype=torch.float32, device=balanced_rows.device))


def chunked_batches(train: Chunks, batch_size: int) -> Batches:
    """Each epoch: the balanced training chunks in a fresh random order."""

    def epoch(generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = train.balanced[torch.randperm(len(train.balanced), generator=generator).to(train.x.device)]
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            # index_select copies whole rows; x[idx] goes through the general, much slower indexing kernel
            yield train.x.index_select(0, idx), train.y.index_select(0, idx)

    return epoch


def random_chunk_batches(recordings: Spectrograms, chunk_size: int, batch_size: int,
                         balance: ClassBalance | None = None) -> Batches:
    """Each epoch: every balanced training recording once, as one random window of ``chunk_size``
    (or ``balance``'s draw of the training recordings)."""
    balance = balance or ClassBalance(recordings.balanced_train, len(recordings.balanced_train))
    rows = balance.rows
    usable = recordings.windows[rows] >= chunk_size  # a recording shorter than a chunk gives none
    rows = rows[usable]
    if len(rows) == 0:
        raise ValueError(f"no training recording has {chunk_size} windows for a chunk")

    def epoch(generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = rows.device
        order = rows[torch.randperm(len(rows), generator=generator).to(device)][:balance.epoch_size]
        # any start from 0 to windows - size, uniformly, for all recordings of the epoch at once
        room = (recordings.windows[order] - chunk_size + 1).to(torch.float64)
        starts = (torch.rand(len(order), generator=generator, dtype=torch.float64).to(device) * room).long()
        for start in range(0, len(order), batch_size):
            r, s = order[start : start + batch_size], starts[start : start + batch_size]
            yield gather_windows(recordings.spectra, r, s, chunk_size), recordings.labels[r]

    return epoch


def random_crop_batches(signals: SignalSet, rows: torch.Tensor, featurizer: Featurizer, batch_size: int,
                        augmentation: Augmentation | None = None, epoch_size: int | None = None) -> Batches:
    """Each epoch: every balanced training recording ``rows`` once (or the first ``epoch_size`` of them
    in the epoch's random order), as one crop of the raw signal at a uniformly random offset (drawn for
    the whole epoch at once), augmented if asked, and turned into network input by ``featurizer`` batch
    by batch."""
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
        order = rows[torch.randperm(len(rows), generator=generator).to(device)][:epoch_size]
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
    class_balance: str = "oversample"  # or loss_weights (class_balance())


# the preprocessing object a model trains with, from the training signals and rows where its
# featurizer normalises with their statistics (None for loaders that do not read the signals)
Featurize = Callable[[SignalSet | None, torch.Tensor | None], Preprocessing]


@dataclass
class Loader:
    batches: Batches
    inputs: list[Path]  # the files it read (MLflow lineage)
    preprocessing: Preprocessing
    class_weights: torch.Tensor | None = None  # the loss's, per class (class_balance())


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
    balance = class_balance(recordings.balanced_train, recordings.labels, len(preprocessing.class_names),
                            src.class_balance)
    return Loader(random_chunk_batches(recordings, src.chunk_size, src.batch_size, balance),
                  [Path(src.spectrogram_dir) / SPECTRA_FILE, Path(src.balance_path)], preprocessing,
                  balance.class_weights)


@register_loader("random_crop")
def random_crop_loader(src: LoaderSources, featurize: Featurize) -> Loader:
    """The raw signal: one (augmented) crop per balanced training recording, each epoch, through the
    model's featurizer."""
    if src.signals_path is None:
        raise ValueError("the random_crop loader needs the signals stage's file (--signals)")
    signals = load_signal_set(src.signals_path, src.spectrogram_dir).to(src.device)
    train_rows = torch.tensor(read_json(src.balance_path)["train"], dtype=torch.long, device=src.device)
    preprocessing = featurize(signals, train_rows)
    balance = class_balance(train_rows, signals.labels, len(preprocessing.class_names), src.class_balance)
    batches = random_crop_batches(signals, balance.rows, preprocessing.featurizer, src.batch_size, src.augment,
                                  balance.epoch_size)
    return Loader(batches, [Path(src.signals_path), Path(src.balance_path)], preprocessing, balance.class_weights)
