"""Metrics against values computed by hand, and chunk-to-recording aggregation."""
import math

import numpy as np
import pytest
import torch

from ecgpipe.evaluation.metrics import score
from ecgpipe.inference.preprocessing import aggregate_by_record


def test_two_class_metrics_by_hand():
    # 6 normal (0) and 4 AF (1); predicted by probability of AF > 0.5
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    p_af = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.1, 0.9, 0.8, 0.3, 0.7])
    result = score(y, np.stack([1 - p_af, p_af], axis=1), ["N", "A"])
    # predictions: N N N A N N | A A N A -> TN 5, FP 1, FN 1, TP 3
    assert result["confusion"] == [[5, 1], [1, 3]]
    assert result["accuracy"] == pytest.approx(8 / 10)
    assert result["precision"] == pytest.approx({"N": 5 / 6, "A": 3 / 4})
    assert result["recall"] == pytest.approx({"N": 5 / 6, "A": 3 / 4})
    assert result["f1"]["A"] == pytest.approx(3 / 4)
    assert result["macro_f1"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert result["balanced_accuracy"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert result["support"] == {"N": 6, "A": 4}
    np.testing.assert_allclose(result["confusion_normalised"], [[5 / 6, 1 / 6], [1 / 4, 3 / 4]], atol=1e-6)
    # ROC AUC: pairs (AF, normal) ranked correctly: 0.9, 0.8, 0.7 beat all 6; 0.3 beats 0.1, 0.2, 0.1
    # and ties 0.3 (half): (3 * 6 + 3.5) / 24
    assert result["roc_auc"] == pytest.approx((18 + 3.5) / 24)
    assert "challenge_score" not in result


def test_four_class_metrics_and_challenge_score():
    names = ["N", "A", "O", "~"]
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    predicted = np.array([0, 0, 2, 1, 0, 2, 2, 1, 3, 0])
    probs = np.full((10, 4), 0.1)
    probs[np.arange(10), predicted] = 0.7
    result = score(y, probs, names)
    # N: TP 2, FP 2 (the A and ~ called N), FN 1 -> P 1/2, R 2/3, F1 4/7
    # A: TP 1, FP 1, FN 1 -> F1 1/2;  O: TP 2, FP 1, FN 1 -> F1 2/3;  ~: TP 1, FP 0, FN 1 -> F1 2/3
    assert result["f1"] == pytest.approx({"N": 4 / 7, "A": 1 / 2, "O": 2 / 3, "~": 2 / 3})
    assert result["challenge_score"] == pytest.approx((4 / 7 + 1 / 2 + 2 / 3) / 3)
    assert result["macro_f1"] == pytest.approx((4 / 7 + 1 / 2 + 2 / 3 + 2 / 3) / 4)
    assert result["accuracy"] == pytest.approx(6 / 10)
    assert np.array(result["confusion"]).sum() == 10 and result["confusion"][3] == [1, 0, 0, 1]
    assert 0 < result["roc_auc"] <= 1 and 0 < result["average_precision"] <= 1


def test_class_never_predicted_gets_defined_values_and_a_warning():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])  # always N
    with pytest.warns(UserWarning, match=r"no predictions for class\(es\) \['A'\]: their precision is set to 0"):
        result = score(y, probs, ["N", "A"])
    assert result["precision"]["A"] == 0.0 and result["f1"]["A"] == 0.0 and result["recall"]["A"] == 0.0
    assert result["accuracy"] == 0.5 and result["roc_auc"] == 1.0  # the ranking is still perfect


def test_single_class_present_has_undefined_curves():
    with pytest.warns(UserWarning, match="ROC AUC and average precision undefined"):
        result = score(np.array([0, 0]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["N", "A"])
    assert math.isnan(result["roc_auc"])


def test_aggregation_of_chunks_to_recordings():
    # recording 7: chunks with logits 2 and -4; recording 3: logits 0, 0, 3
    logits = torch.tensor([[2.0], [0.0], [-4.0], [0.0], [3.0]])
    records = torch.tensor([7, 3, 7, 3, 3])
    rows, by_logit = aggregate_by_record(logits, records, "mean_logit")
    assert rows.tolist() == [3, 7]
    torch.testing.assert_close(by_logit[:, 1], torch.sigmoid(torch.tensor([1.0, -1.0])))
    _, by_prob = aggregate_by_record(logits, records, "mean_probability")
    s = torch.sigmoid
    expected = torch.stack([(s(torch.tensor(0.0)) * 2 + s(torch.tensor(3.0))) / 3, (s(torch.tensor(2.0)) + s(torch.tensor(-4.0))) / 2])
    torch.testing.assert_close(by_prob[:, 1], expected)
    torch.testing.assert_close(by_prob.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="aggregation must be"):
        aggregate_by_record(logits, records, "median")


def test_aggregation_multiclass_mean_logit_is_softmax_of_mean():
    logits = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 2.0]])
    _, probs = aggregate_by_record(logits, torch.tensor([0, 0]), "mean_logit")
    torch.testing.assert_close(probs[0], torch.softmax(torch.tensor([2.0, 0.0, 1.0]), 0))


def test_af_false_alarms_on_unseen_labels_by_hand():
    from ecgpipe.evaluation.metrics import Bootstrap, unseen_label_figures

    # three O recordings, one of them called AF; two ~ recordings, neither called AF
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.51, 0.49]])
    figures = unseen_label_figures(probs, ["N", "A"], np.array(["O", "O", "~", "O", "~"]), Bootstrap(200, 0))
    assert figures["recordings"] == {"O": 3, "~": 2}
    assert figures["af_specificity"] == pytest.approx({"O": 2 / 3, "~": 1.0})
    low, high = figures["ci"]["af_specificity"]["O"]
    assert 0 <= low < 2 / 3 < high <= 1  # resamples of three recordings: 0, 1/3, 2/3 or 1 called AF
    assert figures["ci"]["af_specificity"]["~"] == [1.0, 1.0]


def test_temperature_threshold_and_calibration_error_by_hand():
    from ecgpipe.evaluation.calibration import calibration_figures, fit_temperature, operating_threshold
    from ecgpipe.evaluation.metrics import Bootstrap

    # overconfident logits: the class is right 3 times in 4 at |logit| 4 (P 0.98), so the fitted
    # temperature brings P down towards 0.75, i.e. logit 4 / T = log 3
    logits = torch.tensor([[4.0], [4.0], [4.0], [4.0], [-4.0], [-4.0], [-4.0], [-4.0]])
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    temperature = fit_temperature(logits, torch.arange(8), y, "mean_logit")
    assert temperature == pytest.approx(4 / np.log(3), rel=0.02)
    # the threshold that finds 95% of 20 positives (all but the lowest), and 80% (all but 4)
    p = np.linspace(0.05, 1.0, 20)
    assert operating_threshold(p, np.ones(20), 0.95) == pytest.approx(p[1])
    assert operating_threshold(p, np.ones(20), 0.80) == pytest.approx(p[4])
    with pytest.raises(ValueError, match="no positive recording"):
        operating_threshold(p, np.zeros(20), 0.95)
    # perfectly calibrated bins (P 0.25: one in four positive; P 0.75: three in four): error 0
    p = np.array([0.25] * 4 + [0.75] * 4)
    hit = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    figures = calibration_figures(p, hit, Bootstrap(200, 0))
    assert figures["ece"] == pytest.approx(0.0, abs=1e-12) and figures["ci"][0] >= 0
    assert figures["bins"] == {"recordings": [4, 4], "mean_probability": [0.25, 0.75], "observed": [0.25, 0.75]}
    # everything at P 0.9 and half positive: error 0.4
    assert calibration_figures(np.full(8, 0.9), hit, Bootstrap(200, 0))["ece"] == pytest.approx(0.4)
