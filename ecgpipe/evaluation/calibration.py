"""The served operating point and calibrated probabilities, fitted on recordings held out of training
(split.json's ``calibration``, never the validation recordings they are reported on):

- a temperature that divides every logit before sigmoid/softmax, the one that minimises the negative
  log-likelihood of the held-out recordings' classes (probabilities that mean what they say; the
  ranking, hence ROC AUC, does not change);
- a threshold on P(positive) that finds a declared share (``sensitivity``) of the held-out positive
  recordings: the served label's rule (``inference.preprocessing.Decision``);
- the expected calibration error of P(positive) with its bootstrap interval, and the reliability
  curve it is read from, on the recordings a model is evaluated on.
"""
from __future__ import annotations

import numpy as np
import torch

from ecgpipe.evaluation.metrics import Bootstrap, stratified_resamples
from ecgpipe.inference.preprocessing import Aggregation, Decision, aggregate_by_record

# candidate temperatures: log-spaced from 1/10 to 10, ratio 1.012 between neighbours (a grid, not an
# optimiser: the same answer on every machine, and no local minimum to fall into)
TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(10.0), 401))
RELIABILITY_BINS = 10  # equal-width bins of P(positive) for the calibration error


def fit_temperature(logits: torch.Tensor, owner: torch.Tensor, y: np.ndarray, aggregation: Aggregation) -> float:
    """The temperature of ``TEMPERATURES`` whose recording probabilities (windows' ``logits`` of
    recordings ``owner``, aggregated) give the classes ``y`` (one per recording, owners ascending) the
    highest likelihood."""
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    losses = []
    for temperature in TEMPERATURES:
        _, probs = aggregate_by_record(logits.double(), owner, aggregation, float(temperature))
        chosen = probs[torch.arange(len(y)), y].clamp_min(1e-12)
        losses.append(float(-chosen.log().mean()))
    return float(TEMPERATURES[int(np.argmin(losses))])


def operating_threshold(p_positive: np.ndarray, is_positive: np.ndarray, sensitivity: float) -> float:
    """The highest threshold on P(positive) at which at least ``sensitivity`` of the positive
    recordings reach it (as ``metrics``' figures at 95% of AF found read a threshold)."""
    scores = np.sort(np.asarray(p_positive)[np.asarray(is_positive, dtype=bool)])
    if len(scores) == 0:
        raise ValueError("no positive recording to choose the operating point on")
    # the most positives that may fall below it; 1e-9 absorbs the rounding of (1 - 0.8) * 20 = 3.99...
    below = int(np.floor((1 - sensitivity) * len(scores) + 1e-9))
    return float(scores[min(below, len(scores) - 1)])


def decision_on(p_positive: np.ndarray, is_positive: np.ndarray, positive: str, sensitivity: float) -> Decision:
    return Decision(positive, operating_threshold(p_positive, is_positive, sensitivity), sensitivity)


def calibration_figures(p_positive: np.ndarray, is_positive: np.ndarray, bootstrap: Bootstrap,
                        bins: int = RELIABILITY_BINS) -> dict:
    """The expected calibration error of P(positive) (the share-weighted gap between the mean
    probability and the observed share of positives, over equal-width bins), with its interval over
    resamples stratified by class, and the reliability curve: per bin, the recordings, their mean
    P(positive) and the observed share."""
    p = np.asarray(p_positive, dtype=np.float64)
    hit = np.asarray(is_positive, dtype=np.float64)
    index = np.concatenate([np.arange(len(p))[None, :],  # row 0: the recordings as they are
                            stratified_resamples(hit.astype(np.int64), bootstrap.resamples, bootstrap.seed)])
    which = np.minimum((p * bins).astype(np.int64), bins - 1)[index]
    cells = (np.arange(len(index))[:, None] * bins + which).ravel()

    def per_bin(values: np.ndarray) -> np.ndarray:
        return np.bincount(cells, weights=values.ravel(), minlength=len(index) * bins).reshape(len(index), bins)

    count = per_bin(np.ones_like(which, dtype=np.float64))
    mean_p, observed = per_bin(p[index]), per_bin(hit[index])
    gap = np.abs(mean_p - observed)  # sums per bin: |n * mean_p - n * observed|
    ece = gap.sum(axis=1) / index.shape[1]
    filled = count[0] > 0
    return {"ece": float(ece[0]), "ci": list(bootstrap.interval(ece[1:])),
            "bins": {"recordings": count[0][filled].astype(int).tolist(),
                     "mean_probability": (mean_p[0][filled] / count[0][filled]).round(6).tolist(),
                     "observed": (observed[0][filled] / count[0][filled]).round(6).tolist()}}
