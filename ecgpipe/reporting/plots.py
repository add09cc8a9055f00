"""Figures, drawn with matplotlib off-screen."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from ecgpipe.core.results import HISTORY_CURVES, LEVELS, history_name, interval  # noqa: E402


def close(*figures) -> None:
    """Free figures once saved and logged: pyplot holds every figure it drew until it is closed."""
    for fig in figures:
        plt.close(fig)


def training_curves(epochs: list[dict[str, float]], title: str):
    """Loss and accuracy per epoch: the training batches, and the validation recordings at each level
    (balanced chunks: the notebook's figure); a recording has no loss."""
    x = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for (split, level), label in HISTORY_CURVES.items():
        loss = history_name(split, level, "loss")
        if loss in epochs[0]:
            ax_loss.plot(x, [e[loss] for e in epochs], label=label)
        ax_acc.plot(x, [e[history_name(split, level, "accuracy")] for e in epochs], label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


LEVEL_TITLES = dict(zip(LEVELS, ("chunks, balanced (notebook)", "chunks, natural", "recordings")))


def _confusion_panel(ax, counts, normalised, class_names, title):
    import numpy as np

    counts, normalised = np.asarray(counts), np.asarray(normalised)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            colour = "white" if normalised[i, j] > 0.6 else "black"
            ax.text(j, i, f"{counts[i, j]:,}\n{100 * normalised[i, j]:.1f}%", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="actual", title=title)


def confusion_matrices(levels: dict, class_names: list[str], title: str):
    """One panel per level: counts, and percentages of each actual class (rows sum to 100%)."""
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 4), squeeze=False)
    for ax, (level, result) in zip(axes[0], levels.items()):
        _confusion_panel(ax, result["confusion"], result["confusion_normalised"], class_names,
                         f"{LEVEL_TITLES.get(level, level)}\naccuracy {result['accuracy']:.3f}")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def reliability(section: dict, positive: str, title: str):
    """The reliability curve of P(positive) (eval.json's calibration section): each bin's mean
    probability against the observed share of positives, marker area by recordings; the served
    threshold as a vertical line."""
    bins = section["bins"]
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="calibrated")
    ax.plot(bins["mean_probability"], bins["observed"], marker="o", label=f"temperature {section['temperature']:.2f}")
    ax.scatter(bins["mean_probability"], bins["observed"], s=[8 + 2 * n ** 0.5 for n in bins["recordings"]], alpha=0.4)
    if "decision" in section:
        threshold = section["decision"]["threshold"]
        ax.axvline(threshold, c="C3", lw=1, label=f"served threshold {threshold:.3f}")
    low, high = section["ci"]
    ax.set(xlabel=f"P({positive})", ylabel=f"share of {positive} recordings", xlim=(0, 1), ylim=(0, 1),
           title=f"{title}\nECE {section['ece']:.3f} [{low:.3f}–{high:.3f}] "
                 f"(without temperature {section['ece_uncalibrated']:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def roc_pr_curves(fpr, tpr, recall, precision, result: dict, positive: str, title: str):
    """ROC and precision-recall curves of one class against the rest."""
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.3))
    ax_roc.plot(fpr, tpr, label=f"AUC {result['roc_auc']:.3f}")
    ax_roc.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {positive} vs rest")
    prevalence = result["support"][positive] / result["n"]
    ax_pr.plot(recall, precision, label=f"AP {result['average_precision']:.3f}")
    ax_pr.axhline(prevalence, ls="--", c="grey", lw=1, label=f"prevalence {prevalence:.3f}")
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"precision-recall, {positive} vs rest", ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is ax_roc else "upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def comparison(table, metrics: list[str], title: str):
    """Grouped bars: one group per experiment, one bar per metric, with its interval where the
    table has ``<metric>_ci_low`` and ``_ci_high``."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(table)), 4.8))
    width = 0.8 / len(metrics)
    x = np.arange(len(table))
    for k, metric in enumerate(metrics):
        values = table[metric].astype(float).to_numpy()
        errors = None
        low, high = interval(metric)
        if low in table:  # the interval as an error bar
            errors = np.abs(np.stack([values - table[low].astype(float).to_numpy(),
                                      table[high].astype(float).to_numpy() - values]))
        ax.bar(x + (k - (len(metrics) - 1) / 2) * width, values, width, label=metric, yerr=errors,
               error_kw={"elinewidth": 0.8, "capsize": 1.5})
    ax.set_xticks(x, table["experiment"], rotation=30, ha="right")
    ax.set(ylim=(0, 1), ylabel="score")
    ax.set_title(title, pad=30)
    ax.grid(axis="y", alpha=0.3)
    # above the axes, so that no bar is hidden
    ax.legend(ncols=len(metrics), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return fig
