"""Training: data on the device, two loaders, Adam, and per-epoch validation. Reads top to bottom.

- ``chunked``: the balanced pre-chunked training set, shuffled each epoch.
- ``random_chunk``: each epoch, one window of ``chunk_size`` at a random offset from each
  balanced training recording (the notebook's augmentation), drawn for the whole epoch at once.
- ``random_crop``: the same on the raw signal: one crop per recording at a random sample offset,
  augmented (``ecgpipe.augment``) if the experiment says so, and turned into network input by the
  model's featurizer (a raw crop, or the span of one spectrogram chunk), on the device, per batch.
Each epoch is validated on the balanced validation chunks (the notebook's figure) and on the
natural ones (the class mix as it occurs).
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ecgpipe.data.balance import oversample
from ecgpipe.data.chunk import gather_windows
from ecgpipe.data.signals import SignalSet
from ecgpipe.data.store import SPECTRA_FILE
from ecgpipe.io import load_tensors, read_json
from ecgpipe.errors import TrainingError
from ecgpipe.params import ParamsError
from ecgpipe.augment import Augmentation
from ecgpipe.preprocessing import Featurizer


def resolve_device(name: str) -> torch.device:
    """The device that ``train.device`` names; a ParamsError if this machine does not have it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ParamsError(f"params: train.device: expected a device this machine has (cpu, or auto), got {name!r}: "
                              f"it has {count} CUDA device(s)")
    return device


def n_outputs_for(n_classes: int) -> int:
    """Two classes: one logit and binary cross-entropy (as the notebook); more: one per class."""
    return 1 if n_classes == 2 else n_classes


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))
    return nn.functional.cross_entropy(logits, labels)


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)


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

    @classmethod
    def from_crops(cls, signals: SignalSet, rows: torch.Tensor, featurizer: Featurizer, seed: int,
                   batch_size: int = 4096) -> "Chunks":
        """The raw-signal analogue of a chunk file: every window that scores recordings ``rows`` (as
        the featurizer's ``window_starts`` spreads them), through the featurizer, and a balanced set
        oversampled with ``seed``."""
        starts, owners = window_positions(signals, rows, featurizer)
        labels = signals.labels.cpu()[owners]
        balanced = torch.from_numpy(oversample(labels.numpy(), np.random.default_rng(seed)))
        device = signals.samples.device
        x = torch.cat([featurizer.from_sample_windows(spans) for spans in
                       sample_windows(signals.samples, starts.to(device), featurizer.window_samples, batch_size)])
        return cls(x, labels.to(device), owners.to(device), balanced.to(device))


def window_positions(signals: SignalSet, rows: torch.Tensor, featurizer: Featurizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute starts in the signal store of every scoring window of recordings ``rows``, and each
    window's recording (on the CPU)."""
    lengths = signals.lengths.cpu()
    starts = [signals.offsets[r].item() + torch.from_numpy(featurizer.window_starts(int(lengths[r])))
              for r in rows.tolist()]
    owners = torch.repeat_interleave(rows.cpu(), torch.tensor([len(s) for s in starts]))
    return torch.cat(starts), owners


def sample_windows(flat: torch.Tensor, starts: torch.Tensor, span: int, batch_size: int) -> Iterator[torch.Tensor]:
    """The windows (at most ``batch_size``, span) of the 1-D store ``flat`` at ``starts``, batch by batch."""
    offsets = torch.arange(span, device=starts.device)[None, :]
    for begin in range(0, len(starts), batch_size):
        yield flat[starts[begin : begin + batch_size, None] + offsets]


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


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, with the fused kernel: one pass over the parameters instead of a dozen ops per tensor."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def make_lr_schedule(optimizer: torch.optim.Optimizer, schedule: str, epochs: int):
    """The learning rate per epoch: ``constant``, or ``cosine`` from the optimizer's rate towards 0.

    At a constant 0.01 the last epochs' updates still swing the decision threshold, so the final
    epoch's validation accuracy is one draw from a noisy curve; the cosine decay settles it.
    """
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(f"unknown lr_schedule {schedule!r}; expected constant or cosine")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    """One forward, backward and Adam step; returns the loss and the logits, detached (no sync).

    Nothing else happens per batch: the epoch's loss and accuracy are computed once, from all
    its batches' outputs (``EpochOutputs``), which on a CPU saves a handful of small operations
    per step.
    """
    logits = model(x)
    loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


@dataclass
class EpochOutputs:
    """The training batches' losses, logits and labels of an epoch, reduced when asked."""

    losses: list[torch.Tensor] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.losses.append(loss)
        self.logits.append(logits)
        self.labels.append(labels)

    @property
    def seen(self) -> int:
        return sum(len(y) for y in self.labels)

    def loss_and_accuracy(self) -> tuple[float, float]:
        """Mean loss per example (each batch's mean weighted by its size) and accuracy."""
        sizes = torch.tensor([len(y) for y in self.labels], dtype=self.losses[0].dtype, device=self.losses[0].device)
        loss = float(torch.stack(self.losses) @ sizes) / float(sizes.sum())
        correct = predicted_labels(torch.cat(self.logits)) == torch.cat(self.labels)
        return loss, float(correct.float().mean())


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """Logits for ``x[index]`` (all of ``x`` when index is None), in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    n = len(x) if index is None else len(index)
    out = []
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        out.append(model(x[part] if index is None else x[index[part]]))
    model.train(was_training)
    return torch.cat(out)


def evaluate(model: nn.Module, chunks: Chunks, batch_size: int) -> dict[str, float]:
    """Loss and accuracy on the natural and the balanced chunks of a split."""
    logits = predict_logits(model, chunks.x, batch_size)
    result = {}
    for name, idx in (("", None), ("balanced_", chunks.balanced)):
        lg, y = (logits, chunks.y) if idx is None else (logits[idx], chunks.y[idx])
        result[f"{name}loss"] = float(loss_fn(lg, y))
        result[f"{name}acc"] = float((predicted_labels(lg) == y).float().mean())
    return result


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)

    def last(self) -> dict[str, float]:
        return self.epochs[-1]

    def median(self, key: str) -> float:
        return float(statistics.median(e[key] for e in self.epochs))


def fit(
    model: nn.Module,
    batches: Batches,
    val: Chunks,
    epochs: int,
    lr: float,
    seed: int,
    eval_batch_size: int = 4096,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    lr_schedule: str = "constant",
) -> History:
    """Train with Adam; after each epoch validate and call ``on_epoch(epoch, metrics)``."""
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same order on any device
    optimizer = make_optimizer(model, lr)
    schedule = make_lr_schedule(optimizer, lr_schedule, epochs)
    history = History()
    for epoch in range(1, epochs + 1):
        epoch_lr = optimizer.param_groups[0]["lr"]
        model.train()
        outputs = EpochOutputs()
        started = time.perf_counter()
        with tqdm(batches(generator), desc=f"epoch {epoch}/{epochs}", leave=False, disable=None) as bar:
            for i, (x, y) in enumerate(bar):
                loss, logits = train_step(model, optimizer, x, y)
                outputs.add(loss, logits, y)
                if i % 20 == 0 and not bar.disable:
                    loss_so_far, acc_so_far = outputs.loss_and_accuracy()
                    bar.set_postfix(loss=f"{loss_so_far:.3f}", acc=f"{acc_so_far:.3f}")
        train_loss, train_acc = outputs.loss_and_accuracy()  # also waits for a GPU to finish the epoch
        if not math.isfinite(train_loss):
            # checked once per epoch (a check per step would wait for the GPU at every step): one
            # non-finite batch makes the epoch's mean non-finite, so this is the first epoch it happened in
            raise TrainingError(f"the training loss is {train_loss} in epoch {epoch} at learning rate {epoch_lr:g}: "
                                "training diverged; lower the learning rate")
        seconds = time.perf_counter() - started
        seen = outputs.seen
        schedule.step()
        metrics = {"train_loss": train_loss, "train_acc": train_acc}
        metrics.update({f"val_{k}": v for k, v in evaluate(model, val, eval_batch_size).items()})
        metrics.update({"examples_per_s": seen / seconds, "epoch_seconds": seconds, "lr": epoch_lr})
        history.epochs.append({"epoch": epoch, **metrics})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history
