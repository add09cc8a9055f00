"""Bootstrap intervals and paired comparisons of recording-level figures."""
import numpy as np
import pytest

from ecgpipe.evaluation.metrics import (
    Bootstrap,
    confidence_intervals,
    figure,
    paired_difference,
    resampled_figures,
    score,
    stratified_resamples,
)


def _scores(n, classes, rng, skill=2.0, ties=False):
    """Labels (about 15% of the last class in the binary case) and probabilities that track them."""
    k = len(classes)
    p = [0.85, 0.15] if k == 2 else None
    y = rng.choice(k, size=n, p=p)
    logits = rng.normal(size=(n, k)) + skill * np.eye(k)[y]
    if ties:
        logits = np.round(logits, 1)  # many equal scores: ROC AUC and AP must treat ties as sklearn does
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("classes", [["N", "A"], ["N", "A", "O", "~"]])
@pytest.mark.parametrize("ties", [False, True])
def test_vectorised_figures_equal_scikit_learn(classes, ties):
    rng = np.random.default_rng(0)
    y, probs = _scores(400, classes, rng, ties=ties)
    expected = score(y, probs, classes)
    got = resampled_figures(y, probs, classes, np.arange(len(y))[None, :])
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "average_precision"):
        assert got[name][0] == pytest.approx(expected[name], abs=1e-12), name
    for name in ("precision", "recall", "f1"):
        for c in classes:
            assert got[name][c][0] == pytest.approx(expected[name][c], abs=1e-12), (name, c)
    if "O" in classes:
        assert got["challenge_score"][0] == pytest.approx(expected["challenge_score"], abs=1e-12)


def test_resamples_are_stratified_and_reproducible():
    y = np.array([0] * 90 + [1] * 10)
    index = stratified_resamples(y, 200, seed=7)
    assert index.shape == (200, 100)
    assert (y[index].sum(axis=1) == 10).all()  # every resample keeps 10 of class 1: both classes present
    assert np.array_equal(index, stratified_resamples(y, 200, seed=7))
    assert not np.array_equal(index, stratified_resamples(y, 200, seed=8))


def test_interval_contains_the_estimate_and_narrows_with_more_recordings():
    rng = np.random.default_rng(1)
    bootstrap = Bootstrap(resamples=500, seed=3)
    widths = []
    for n in (200, 3200):
        y, probs = _scores(n, ["N", "A"], rng, skill=1.5)
        point = score(y, probs, ["N", "A"])
        ci = confidence_intervals(y, probs, ["N", "A"], bootstrap)
        for name in ("accuracy", "roc_auc", "average_precision", "macro_f1"):
            assert ci[name][0] <= point[name] <= ci[name][1], (n, name)
        assert ci["f1"]["A"][0] <= point["f1"]["A"] <= ci["f1"]["A"][1]
        widths.append(ci["f1"]["A"][1] - ci["f1"]["A"][0])
        assert ci == confidence_intervals(y, probs, ["N", "A"], bootstrap)  # the seed fixes it
    assert widths[1] < widths[0] / 2  # 16x the recordings: about a quarter of the width


def test_paired_difference_finds_a_planted_difference_and_not_a_null_one():
    rng = np.random.default_rng(2)
    y, good = _scores(600, ["N", "A"], rng, skill=3.0)
    noisy = good.copy()
    flip = rng.random(len(y)) < 0.25  # a quarter of the recordings get the wrong answer
    noisy[flip] = noisy[flip][:, ::-1]
    bootstrap = Bootstrap(resamples=500, seed=5)
    planted = paired_difference(y, good, noisy, ["N", "A"], "f1_A", bootstrap)
    expected = score(y, good, ["N", "A"])["f1"]["A"] - score(y, noisy, ["N", "A"])["f1"]["A"]
    assert planted.difference == pytest.approx(expected) and planted.difference > 0
    assert planted.low > 0 and planted.excludes_zero
    same = paired_difference(y, good, good.copy(), ["N", "A"], "f1_A", bootstrap)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero
    # two models as good as each other that err on different recordings: no real difference
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    a, b = good.copy(), good.copy()
    for model, part in ((a, slice(0, 8)), (b, slice(8, 16))):
        errs = np.concatenate([positives[part], negatives[part]])
        model[errs] = good[errs][:, ::-1]
    tie = paired_difference(y, a, b, ["N", "A"], "f1_A", bootstrap)
    assert tie.difference == pytest.approx(0, abs=0.01)
    assert tie.low < 0 < tie.high and not tie.excludes_zero


def test_figure_names():
    y, probs = _scores(100, ["N", "A"], np.random.default_rng(0))
    figures = resampled_figures(y, probs, ["N", "A"], np.arange(100)[None, :])
    assert figure(figures, "f1_A")[0] == figures["f1"]["A"][0]
    assert figure(figures, "balanced_accuracy")[0] == figures["balanced_accuracy"][0]
    with pytest.raises(KeyError, match="no figure 'f1_X'"):
        figure(figures, "f1_X")


def test_a_four_class_model_read_as_an_af_alarm():
    """P(A) of a four-class model answers "is this AF?": its ROC AUC against every other recording
    is scikit-learn's, and the false alarms are counted per other class, at the argmax decision and
    at the threshold that finds 95% of the AF recordings; the intervals hold the point estimates."""
    from sklearn.metrics import roc_auc_score

    classes = ["N", "A", "O", "~"]
    rng = np.random.default_rng(4)
    y, probs = _scores(600, classes, rng, skill=1.5)
    point = score(y, probs, classes)
    assert point["af_roc_auc"] == pytest.approx(roc_auc_score(y == 1, probs[:, 1]), abs=1e-12)
    called_af = probs.argmax(axis=1) == 1
    p_af = probs[:, 1]
    threshold = np.sort(p_af[y == 1])[int(np.floor(0.05 * (y == 1).sum()))]
    assert (p_af[y == 1] >= threshold).mean() >= 0.95
    for i, c in ((0, "N"), (2, "O"), (3, "~")):
        assert point["af_specificity"][c] == pytest.approx(1 - called_af[y == i].mean())
        assert point["af_specificity_at_sensitivity_95"][c] == pytest.approx((p_af[y == i] < threshold).mean())
    assert set(point["af_specificity"]) == {"N", "O", "~"}  # AF is not a false alarm of its own
    ci = confidence_intervals(y, probs, classes, Bootstrap(resamples=300, seed=1))
    assert ci["af_roc_auc"][0] <= point["af_roc_auc"] <= ci["af_roc_auc"][1]
    for c in ("N", "O", "~"):
        for key in ("af_specificity", "af_specificity_at_sensitivity_95"):
            low, high = ci[key][c]
            assert low <= point[key][c] <= high and high - low > 0, (key, c)
    # two classes: the figures of the one class against the other already say it all
    assert "af_roc_auc" not in score(*_scores(100, ["N", "A"], rng), ["N", "A"])
