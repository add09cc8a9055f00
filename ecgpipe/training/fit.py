"""The fit loop: Adam, an optional cosine schedule, and a validation after each epoch (a callback:
the pipeline's scores the validation recordings through the Predictor, as the evaluate stage does).
Stops at the first epoch whose loss is not finite. Reads top to bottom."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ecgpipe.core.errors import TrainingError
from ecgpipe.core.results import TRAIN, history_name
from ecgpipe.models.heads import loss_fn, predicted_labels
from ecgpipe.training.loaders import Batches
from ecgpipe.training.precision import autocast


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


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               precision: str = "float32", class_weights: torch.Tensor | None = None):
    """One forward, backward and Adam step; returns the loss and the logits, detached (no sync).

    Nothing else happens per batch: the epoch's loss and accuracy are computed once, from all
    its batches' outputs (``EpochOutputs``), which on a CPU saves a handful of small operations
    per step. ``precision`` bfloat16: the forward pass under autocast, the loss in float32.
    ``class_weights``: the loss's weight of each class (:func:`ecgpipe.models.heads.loss_fn`).
    """
    with autocast(precision, x.device):
        logits = model(x)
    logits = logits.float()
    loss = loss_fn(logits, y, class_weights)
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
    validate: Callable[[nn.Module], dict[str, float]],
    epochs: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    lr_schedule: str = "constant",
    precision: str = "float32",
    class_weights: torch.Tensor | None = None,
) -> History:
    """Train with Adam; after each epoch ``validate(model)`` (in float32, its figures by history name)
    and call ``on_epoch(epoch, metrics)``.
    ``precision``: as :func:`ecgpipe.training.precision.resolve_precision` returned it; ``class_weights``:
    the loss's weight of each class, on the batches' device (None: unweighted), which the history's training loss is too."""
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
                loss, logits = train_step(model, optimizer, x, y, precision, class_weights)
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
        metrics = {history_name(TRAIN, "", "loss"): train_loss, history_name(TRAIN, "", "accuracy"): train_acc,
                   **validate(model)}
        metrics.update({"examples_per_s": seen / seconds, "epoch_seconds": seconds, "lr": epoch_lr})
        history.epochs.append({"epoch": epoch, **metrics})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history
