"""Figures, drawn with matplotlib off-screen."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(epochs: list[dict[str, float]], title: str):
    """Loss and accuracy per epoch: train, balanced validation (the notebook's), natural validation."""
    x = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("train", "train"), ("val_balanced", "val, balanced"), ("val", "val, natural")):
        ax_loss.plot(x, [e[f"{key}_loss"] for e in epochs], label=label)
        ax_acc.plot(x, [e[f"{key}_acc"] for e in epochs], label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
