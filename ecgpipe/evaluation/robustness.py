"""The device shifts in evaluation: a split's recordings scored again under each shift, with
intervals, and the shift that lowers each figure most."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ecgpipe.core.results import figure as stat_figure
from ecgpipe.core.results import joined, mlflow_names, shift_metric_prefix, with_interval
from ecgpipe.evaluation.metrics import Bootstrap, positive_class, resampled_figures, score, stratified_resamples
from ecgpipe.evaluation.scoring import SplitOutputs
from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.readers import Signal
from ecgpipe.signal.shifts import Shift, shift_rng

SHIFT_FIGURES = ("roc_auc", "f1", "recall", "specificity")  # recall of A = sensitivity to AF
AF_ROC_AUC = "af_roc_auc"  # P(A) of AF against every other recording, where a model reads as an AF alarm


def shifted_signals(signals: list[Signal], rows: list[int], name: str, shift: Shift, seed: int) -> list[Signal]:
    """The recordings ``signals`` (of ``rows``, their rows in records.csv) under shift ``name``: each
    recording's random draw depends on the seed, the shift and its row only (``shift_rng``)."""
    return [Signal(*shift.apply(signal.samples, signal.fs, shift_rng(seed, name, row)))
            for signal, row in zip(signals, rows)]


def resample_figures(y: np.ndarray, probs: np.ndarray, class_names: list[str], bootstrap: Bootstrap,
                     labels: np.ndarray | None = None) -> tuple[dict, dict]:
    """(figures on the recordings as they are, figures on each bootstrap resample): the resamples
    depend only on ``y`` and the seed, so those of two scorings of the same recordings are paired."""
    identity = np.arange(len(y))[None, :]
    index = stratified_resamples(y, bootstrap.resamples, bootstrap.seed)
    return (resampled_figures(y, probs, class_names, identity, labels=labels),
            resampled_figures(y, probs, class_names, index, labels=labels))


def shift_figures(y: np.ndarray, probs: np.ndarray, clean: tuple[dict, dict], class_names: list[str],
                  bootstrap: Bootstrap, labels: np.ndarray | None = None) -> dict:
    """One shift's recording-level figures: ROC AUC, F1, sensitivity (``recall``) and specificity per
    class, each with its interval (``ci``), and ``change``: the paired difference from the unshifted
    figures ``clean`` (of :func:`resample_figures`) of F1 of the positive class and of ROC AUC,
    as [difference, low, high]. ``labels``: each recording's class by a served decision's rule (None:
    the most likely class; ``clean`` must have been labelled the same way)."""
    full = score(y, probs, class_names, labels=labels)
    alarm = AF_ROC_AUC in full  # a model read as an AF alarm: its ranking of AF, and AF found, too
    figures = {k: full[k] for k in (*SHIFT_FIGURES, *([AF_ROC_AUC] if alarm else []))}
    point, resampled = resample_figures(y, probs, class_names, bootstrap, labels)
    figures["ci"] = {k: {c: list(bootstrap.interval(v)) for c, v in resampled[k].items()}
                     if isinstance(resampled[k], dict) else list(bootstrap.interval(resampled[k]))
                     for k in figures}
    figures["change"] = {}
    positive = positive_class(class_names)
    for name in (f"f1_{positive}", "roc_auc", *([f"recall_{positive}"] if alarm else [])):
        difference = float(stat_figure(point, name)[0] - stat_figure(clean[0], name)[0])
        low, high = bootstrap.interval(stat_figure(resampled, name) - stat_figure(clean[1], name))
        figures["change"][name] = [difference, low, high]
    return figures


def shifts_figures(score: Callable[[str, list[Signal]], np.ndarray], signals: list[Signal], rows: list[int],
                   y: np.ndarray, clean_probs: np.ndarray, class_names: list[str], shifts: dict[str, Shift], seed: int,
                   bootstrap: Bootstrap, labels_of: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """The one loop over the device shifts: :func:`shift_figures` of every shift, for recordings
    ``signals`` (of ``rows``) with classes ``y``, scored ``clean_probs`` as they are. ``score(name,
    shifted)`` scores them under shift ``name`` (a predictor, an ensemble's part); ``labels_of``: a
    served decision's rule (None: the most likely class)."""
    def labels(probs):
        return None if labels_of is None else labels_of(probs)

    clean = resample_figures(y, clean_probs, class_names, bootstrap, labels(clean_probs))
    results = {}
    for name, shift in shifts.items():
        probs = score(name, shifted_signals(signals, rows, name, shift, seed))
        results[name] = shift_figures(y, probs, clean, class_names, bootstrap, labels(probs))
    return results


def evaluate_shifts(predictor: Predictor, record_labels: torch.Tensor, clean: SplitOutputs, shifts: dict[str, Shift],
                    seed: int, batch_size: int, bootstrap: Bootstrap, device: torch.device | str = "cpu") -> dict:
    """:func:`shifts_figures` of the recordings that ``clean`` scored unshifted through ``predictor``
    (starting from the recordings as it read them), labelled by its served rule."""
    rows = clean.rows.tolist()

    def score(name: str, shifted: list[Signal]) -> np.ndarray:
        return predictor.score(shifted, rows, batch_size, device).probs.numpy()

    return shifts_figures(score, [clean.signals[r] for r in rows], rows, record_labels[clean.rows].numpy(),
                          clean.probs.numpy(), list(predictor.class_names), shifts, seed, bootstrap,
                          predictor.preprocessing.labels)


def worst_shift(shifts: dict, class_names: list[str]) -> dict | None:
    """The shift with the lowest F1 of the positive class, and the lowest ROC AUC under any shift."""
    if not shifts:
        return None
    positive = positive_class(class_names)
    name = min(shifts, key=lambda n: shifts[n]["f1"][positive])
    worst = {"shift": name, f"f1_{positive}": shifts[name]["f1"][positive],
             f"f1_{positive}_change": shifts[name]["change"][f"f1_{positive}"][0],
             "min_roc_auc": min(v["roc_auc"] for v in shifts.values()),
             "min_roc_auc_shift": min(shifts, key=lambda n: shifts[n]["roc_auc"])}
    if all(AF_ROC_AUC in v for v in shifts.values()):  # an AF alarm: its gate reads these (docs/decisions)
        recall = f"recall_{positive}_change"
        worst.update({recall: min(v["change"][f"recall_{positive}"][0] for v in shifts.values()),
                      f"{recall}_shift": min(shifts, key=lambda n: shifts[n]["change"][f"recall_{positive}"][0]),
                      "min_af_roc_auc": min(v[AF_ROC_AUC] for v in shifts.values())})
    return worst


def shift_mlflow_metrics(split: str, shifts: dict) -> dict[str, float]:
    """``val_shift_<name>_roc_auc``, ``..._f1_A``, ``..._f1_A_ci_low``, ``..._change_f1_A`` ..."""
    flat = {}
    for name, figures in shifts.items():
        prefix = shift_metric_prefix(split, name)
        for key in figures["ci"]:
            value, interval = figures[key], figures["ci"][key]
            for cls, v in (value.items() if isinstance(value, dict) else [("", value)]):
                low, high = interval[cls] if cls else interval
                flat.update(with_interval(joined(prefix, key, cls), v, low, high))
        for figure, (diff, low, high) in figures["change"].items():
            flat.update(with_interval(joined(prefix, "change", figure), diff, low, high))
    return mlflow_names(flat)
