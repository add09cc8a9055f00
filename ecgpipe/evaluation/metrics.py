"""Uncertainty of recording-level figures: stratified bootstrap intervals and paired comparisons.

Every figure is recomputed on resamples of the recordings, all resamples at once with array
operations (no loop over resamples): a (resamples, n) index matrix, confusion counts by one
``bincount``, ROC AUC from ranks, average precision from cumulative counts. The resamples are
stratified: each keeps every class's count, so every resample has both classes and each figure
is defined. A paired comparison scores two models on the same resamples, so the recordings'
own difficulty cancels out of the difference.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.stats

from ecgpipe.core.results import AF, figure
from ecgpipe.core.units import KNOWN_LABELS, REST_LABEL

CHALLENGE_CLASSES = ("N", "A", "O")  # CinC 2017 score: the mean F1 of these three
AF_SENSITIVITY = 0.95  # the operating point of the AF alarm's curve figures: 95% of AF recordings found


def positive_class(class_names: list[str]) -> str:
    """The class whose sensitivity, specificity and worst-shift F1 are reported: A (AF) when present."""
    return "A" if "A" in class_names else class_names[-1]


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 1000
    seed: int = 12345
    confidence: float = 0.95

    def interval(self, values: np.ndarray) -> tuple[float, float]:
        """The percentile interval of one figure's resampled values."""
        tail = (1 - self.confidence) / 2
        low, high = np.quantile(values, [tail, 1 - tail])
        return float(low), float(high)


def stratified_resamples(y: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) indices into ``y``: each row draws, with replacement, as many items of
    every class as ``y`` has (in ``y``'s class order, then position order; figures ignore order)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    columns = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        columns.append(members[rng.integers(0, len(members), size=(resamples, len(members)))])
    return np.concatenate(columns, axis=1)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC per row (Mann-Whitney: ties count half, as scikit-learn)."""
    ranks = scipy.stats.rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = np.where(positive, ranks, 0).sum(axis=1)
    return _divide(rank_sum - n_pos * (n_pos + 1) / 2, (n_pos * n_neg).astype(np.float64))


def _average_precision(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Average precision per row: the sum over distinct thresholds of the recall gained times the
    precision there, with tied scores as one threshold (as scikit-learn)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    hits = np.take_along_axis(positive, order, axis=1)
    tp = np.cumsum(hits, axis=1)
    seen = np.arange(1, s.shape[1] + 1)
    # the last position of each group of tied scores is where its threshold's precision is read
    last_of_group = np.ones_like(s, dtype=bool)
    last_of_group[:, :-1] = s[:, 1:] != s[:, :-1]
    group_end = np.where(last_of_group, seen - 1, s.shape[1])
    group_end = np.minimum.accumulate(group_end[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(tp, group_end, axis=1) / (group_end + 1)
    return _divide((hits * precision_at_end).sum(axis=1), hits.sum(axis=1).astype(np.float64))


def resampled_figures(y: np.ndarray, probs: np.ndarray, class_names: list[str], index: np.ndarray,
                      sources: np.ndarray | None = None, labels: np.ndarray | None = None) -> dict:
    """Every recording-level figure of ``evaluation.score`` on each row of ``index``: a mapping
    like ``score``'s (``accuracy``, ``f1`` per class, ``roc_auc``, ...) with (resamples,) arrays.
    ``sources``: each recording's own label, where a class (REST_LABEL) holds several; ``labels``: the
    class each recording is called (a served decision's rule; None: the most likely class)."""
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    resamples = len(index)
    actual = y[index]
    called = probs.argmax(axis=1) if labels is None else np.asarray(labels, dtype=np.int64)
    predicted = called[index]
    cells = (np.arange(resamples)[:, None] * n_classes + actual) * n_classes + predicted
    confusion = np.bincount(cells.ravel(), minlength=resamples * n_classes * n_classes).reshape(
        resamples, n_classes, n_classes)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    support = confusion.sum(axis=2)
    predicted_count = confusion.sum(axis=1)
    precision = _divide(hits, predicted_count)
    recall = _divide(hits, support)
    f1 = _divide(2 * hits, support + predicted_count)
    negatives = index.shape[1] - support  # one class against the rest: its specificity
    specificity = _divide(negatives - (predicted_count - hits), negatives)
    present = support.sum(axis=0) > 0  # a class absent from y has no recall of its own
    figures = {
        "accuracy": hits.sum(axis=1) / index.shape[1],
        "balanced_accuracy": recall[:, present].mean(axis=1),
        "precision": {c: precision[:, i] for i, c in enumerate(class_names)},
        "recall": {c: recall[:, i] for i, c in enumerate(class_names)},
        "f1": {c: f1[:, i] for i, c in enumerate(class_names)},
        "specificity": {c: specificity[:, i] for i, c in enumerate(class_names)},
        "macro_f1": f1.mean(axis=1),
    }
    if n_classes == 2:
        figures["roc_auc"] = _auc(probs[:, 1][index], actual == 1)
        figures["average_precision"] = _average_precision(probs[:, 1][index], actual == 1)
    else:
        kept = [k for k in range(n_classes) if present[k]]
        figures["roc_auc"] = np.mean([_auc(probs[:, k][index], actual == k) for k in kept], axis=0)
        figures["average_precision"] = np.mean(
            [_average_precision(probs[:, k][index], actual == k) for k in kept], axis=0)
    if set(CHALLENGE_CLASSES) <= set(class_names):
        figures["challenge_score"] = np.mean([figures["f1"][c] for c in CHALLENGE_CLASSES], axis=0)
    if reads_as_af_alarm(y, class_names):
        figures.update(_af_alarm(probs, class_names, index, y, sources, called))
    return figures


def reads_as_af_alarm(y: np.ndarray, class_names: list[str]) -> bool:
    """Whether a model is also read as an AF alarm: AF among its classes and among ``y``, beside
    more than one other class or beside REST_LABEL (whose recordings' own labels differ)."""
    return ((len(class_names) > 2 or REST_LABEL in class_names) and AF in class_names
            and bool((np.asarray(y) == class_names.index(AF)).any()))


def _af_alarm(probs: np.ndarray, class_names: list[str], index: np.ndarray, y: np.ndarray,
              sources: np.ndarray | None, called: np.ndarray) -> dict:
    """A model read as the answer to "is this AF?" (its P(A)), with the false alarms counted on
    each other label separately (the other classes, or the labels that REST_LABEL holds, by
    ``sources``), because "not AF" mixes normal rhythm, other rhythms and noise, and a detector
    fails on them very differently:
    - ``af_roc_auc``: P(A) of AF recordings against all the others;
    - ``af_specificity`` per other label: the share of its recordings not called AF (``called``: each
      recording's label, by the served rule);
    - ``af_specificity_at_sensitivity_95`` per other label: the same share at the P(A) threshold
      where 95% of the AF recordings are called AF (a point of the curve, read on these recordings:
      a property of the ranking, not a threshold chosen for deployment)."""
    a = class_names.index(AF)
    if sources is None:
        labels, order = np.asarray(class_names, dtype=object)[y], class_names
    else:  # the labels present, the classes' own first
        labels = np.asarray(sources, dtype=object)
        order = [c for c in dict.fromkeys((*class_names, *KNOWN_LABELS)) if (labels == c).any()]
    labels = labels[index]
    p_af = probs[:, a][index]
    is_af = y[index] == a
    called_af = called[index] == a
    # stratified resamples: every row holds the same number of AF recordings
    af_scores = np.sort(p_af[is_af].reshape(len(index), -1), axis=1)
    k = int(np.floor((1 - AF_SENSITIVITY) * af_scores.shape[1]))
    threshold = af_scores[:, k][:, None]  # at least 95% of AF recordings have P(A) >= threshold
    members = {c: (labels == c) & ~is_af for c in order if c != AF}
    return {
        "af_roc_auc": _auc(p_af, is_af),
        "af_specificity": {c: _divide((m & ~called_af).sum(axis=1), m.sum(axis=1)) for c, m in members.items()},
        "af_specificity_at_sensitivity_95": {
            c: _divide((m & (p_af < threshold)).sum(axis=1), m.sum(axis=1)) for c, m in members.items()},
    }


def unseen_label_figures(probs: np.ndarray, class_names: list[str], labels: np.ndarray, bootstrap: Bootstrap,
                         called: np.ndarray | None = None) -> dict:
    """AF's false alarms on recordings of labels a model was never trained on (CinC's O and ~ for the
    notebook's N-against-A task), per label: how many (``recordings``), and the share not called AF
    (``af_specificity``, as ``_af_alarm`` reads a model that knows the label; ``called``: each
    recording's class by the served rule, None: the most likely), with its interval (``ci``) from
    resamples stratified by label."""
    labels = np.asarray(labels, dtype=object)
    order = [c for c in KNOWN_LABELS if (labels == c).any()] + sorted(set(labels) - set(KNOWN_LABELS))
    codes = np.array([order.index(label) for label in labels])
    index = np.concatenate([np.arange(len(labels))[None, :],  # row 0: the recordings as they are
                            stratified_resamples(codes, bootstrap.resamples, bootstrap.seed)])
    called = np.asarray(probs).argmax(axis=1) if called is None else np.asarray(called)
    not_called_af = (called != class_names.index(AF))[index]
    figures: dict = {"recordings": {}, "af_specificity": {}, "ci": {"af_specificity": {}}}
    for k, label in enumerate(order):
        members = codes[index] == k
        values = _divide((members & not_called_af).sum(axis=1), members.sum(axis=1))
        figures["recordings"][label] = int((codes == k).sum())
        figures["af_specificity"][label] = float(values[0])
        figures["ci"]["af_specificity"][label] = list(bootstrap.interval(values[1:]))
    return figures


def confidence_intervals(y: np.ndarray, probs: np.ndarray, class_names: list[str], bootstrap: Bootstrap,
                         sources: np.ndarray | None = None, labels: np.ndarray | None = None) -> dict:
    """A (low, high) interval for every figure of ``resampled_figures``, same layout."""
    index = stratified_resamples(y, bootstrap.resamples, bootstrap.seed)
    figures = resampled_figures(y, probs, class_names, index, sources, labels)

    def intervals(value):
        if isinstance(value, dict):
            return {k: intervals(v) for k, v in value.items()}
        return list(bootstrap.interval(value))

    return intervals(figures)


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` of one figure on the same recordings, with its bootstrap interval."""

    difference: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_difference(y: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, class_names: list[str],
                      name: str, bootstrap: Bootstrap) -> PairedDifference:
    """Figure ``name`` of model a minus model b, both scored on the same stratified resamples."""
    identity = np.arange(len(y))[None, :]
    point = figure(resampled_figures(y, probs_a, class_names, identity), name)[0] - figure(
        resampled_figures(y, probs_b, class_names, identity), name)[0]
    index = stratified_resamples(y, bootstrap.resamples, bootstrap.seed)
    differences = figure(resampled_figures(y, probs_a, class_names, index), name) - figure(
        resampled_figures(y, probs_b, class_names, index), name)
    low, high = bootstrap.interval(differences)
    return PairedDifference(float(point), low, high)


def score(y: np.ndarray, probs: np.ndarray, class_names: list[str], sources: np.ndarray | None = None,
          labels: np.ndarray | None = None) -> dict:
    """Every figure of one level: accuracy, balanced accuracy, per-class precision / recall / F1 /
    specificity / support, macro F1, ROC AUC, average precision (one-vs-rest macro averages with more
    than two classes), confusion matrix (counts and row-normalised), and, with N, A and O among the
    classes, the CinC 2017 challenge score; a model read as an AF alarm also gets its false alarms
    per label (``sources``: each recording's own, for REST_LABEL). ``labels``: the class each recording
    is called, where a served decision's rule says (None: the most likely class).

    Each figure is defined once, in ``resampled_figures``: the point estimate is its identity resample.
    A class that is never predicted has an undefined precision: it is reported as 0 with a warning.
    """
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    predicted = probs.argmax(axis=1) if labels is None else np.asarray(labels, dtype=np.int64)
    never = [class_names[c] for c in range(n_classes) if not (predicted == c).any() and (y == c).any()]
    if never:
        warnings.warn(f"no predictions for class(es) {never}: their precision is set to 0")
    point = resampled_figures(y, probs, class_names, np.arange(len(y))[None, :], sources, labels)
    point = {k: {c: float(v[0]) for c, v in f.items()} if isinstance(f, dict) else float(f[0]) for k, f in point.items()}
    present = np.unique(y)
    if len(present) < 2:
        warnings.warn(f"only class(es) {present.tolist()} present: ROC AUC and average precision undefined")
        point["roc_auc"] = point["average_precision"] = float("nan")
    elif len(present) < n_classes:
        absent = sorted(set(range(n_classes)) - set(present.tolist()))
        warnings.warn(f"classes {absent} absent: left out of the one-vs-rest averages")
    confusion = np.bincount(y * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(confusion / confusion.sum(axis=1, keepdims=True))
    curves = ("roc_auc", "average_precision")
    return {"n": int(len(y)),
            **{k: v for k, v in point.items() if k in ("accuracy", "balanced_accuracy", "precision", "recall", "f1",
                                                     "specificity")},
            "support": dict(zip(class_names, map(int, confusion.sum(axis=1)))),
            "macro_f1": point["macro_f1"], **{k: point[k] for k in curves},
            "confusion": confusion.tolist(), "confusion_normalised": normalised.round(6).tolist(),
            **{k: v for k, v in point.items() if k not in ("accuracy", "balanced_accuracy", "precision", "recall", "f1",
                                                         "specificity", "macro_f1", *curves)}}
