"""Class balancing by oversampling: repeat minority-class items until every class has as many."""
from __future__ import annotations

import numpy as np

# Splits that training balances (the notebook balances both, so its accuracies compare).
BALANCED_SPLITS = ("train", "val")


def oversample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``labels``: all of them in order, then extra copies of each smaller class.

    As the notebook's ``balance_dataset``, a class that needs more than its own size is repeated
    whole in fresh random orders and then topped up with a random subset, so copies are spread
    evenly. Done with array operations: no loop over samples.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max() if len(counts) else 0
    extra = [np.arange(len(labels))]
    for label, count in zip(classes, counts):
        need = target - count
        if need == 0:
            continue
        members = np.flatnonzero(labels == label)
        rounds, rest = divmod(need, count)
        if rounds:
            extra.append(rng.permuted(np.tile(members, (rounds, 1)), axis=1).ravel())
        if rest:
            extra.append(rng.permutation(members)[:rest])
    return np.concatenate(extra)


def inverse_share_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """A loss weight per class: the inverse of its share of ``labels`` over the classes present
    (``n / (present classes x n_c)``, scikit-learn's "balanced"), so each class weighs as much in
    total; a class absent from ``labels`` gets 0 (it has no examples to weigh)."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights
