"""AF against the rest: a class (``rest``) that holds N, O and ~, with each recording's own label kept,
so that an AF detector's false alarms are counted per rhythm it has seen."""
import numpy as np
import pandas as pd
import pytest

from ecgpipe.data.store import load_spectrogram_set, read_records, source_labels
from ecgpipe.evaluation.metrics import AF_SENSITIVITY, score
from ecgpipe.params import load_params, parse_params
from ecgpipe.pipeline.balance import run_balance
from ecgpipe.pipeline.chunk import run_chunk
from ecgpipe.pipeline.signals import run_signals
from ecgpipe.pipeline.spectrogram import run_spectrogram
from ecgpipe.pipeline.split import run_split
from ecgpipe.pipeline.task import task_params
from tests.conftest import ROOT, train_and_evaluate


def test_the_projects_af_vs_rest_task():
    params = task_params(ROOT / "params.yaml", "af_vs_rest")
    assert params.spectrogram.classes == ["rest", "A"]
    assert set(params.experiments) == {"raw_resnet-robust_crop"}  # params.yaml's task_experiments
    # the four-class task's recordings, operating point and gate: the AF detector's, as declared in
    # docs/decisions/af-detector-gate.md before its first run
    four = task_params(ROOT / "params.yaml", "four_class")
    assert params.spectrogram.min_length == four.spectrogram.min_length
    assert params.report.gate == four.report.gate and params.evaluate.af_sensitivity == 0.95 == four.evaluate.af_sensitivity
    assert {k: v.at_least for k, v in params.report.gate.items()} == {
        "record_recall_A": 0.93, "record_af_specificity_N": 0.97, "record_af_specificity_O": 0.85,
        "record_af_specificity_~": 0.80, "worst_shift_recall_A_change": -0.05, "min_shift_af_roc_auc": 0.95}
    assert params.split.calibration == 0.1 and load_params(ROOT / "params.yaml").split.calibration == 0.0
    assert params.report.champion_metric == "record_f1_A"


def test_af_specificity_per_label_of_the_rest_class():
    """Hand-counted: 4 AF recordings, and N, O, ~ inside the rest class."""
    sources = np.array(["A", "A", "A", "A", "N", "N", "N", "O", "O", "~"])
    y = (sources == "A").astype(np.int64)  # classes [rest, A]
    p_af = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.65, 0.75, 0.4, 0.3])
    probs = np.stack([1 - p_af, p_af], axis=1)
    result = score(y, probs, ["rest", "A"], sources)
    # called AF (argmax): one N of 3, one O of 2, no ~
    assert result["af_specificity"] == pytest.approx({"N": 2 / 3, "O": 1 / 2, "~": 1.0})
    # at the threshold that finds 95% of AF (here the lowest AF score, 0.6): the same recordings
    assert result["af_specificity_at_sensitivity_95"] == pytest.approx({"N": 2 / 3, "O": 1 / 2, "~": 1.0})
    assert result["af_roc_auc"] == pytest.approx(result["roc_auc"])
    assert result["recall"]["A"] == 1.0
    # without the recordings' own labels, the rest class is counted as one
    assert score(y, probs, ["rest", "A"])["af_specificity"] == pytest.approx({"rest": 4 / 6})
    # a four-class model is read as before: its own labels are its classes
    four = np.full((len(y), 4), 0.1)
    four[np.arange(len(y)), [{"A": 1, "N": 0, "O": 2, "~": 3}[s] for s in sources]] = 0.7
    y4 = np.array([["N", "A", "O", "~"].index(s) for s in sources])
    assert score(y4, four, ["N", "A", "O", "~"], sources) == score(y4, four, ["N", "A", "O", "~"])


def test_af_vs_rest_end_to_end(records_dir, tmp_path, small_params, monkeypatch):
    """The stages on synthetic recordings of four labels with classes [rest, A]: two classes to
    train and balance, each recording's own label in records.csv, and the evaluation's false alarms
    per label equal to a count over the predictions table."""
    small_params["spectrogram"]["classes"] = ["rest", "A"]
    params = parse_params(small_params)
    spec = tmp_path / "spectrogram"
    card = run_spectrogram(params.spectrogram, records_dir, spec, tmp_path / "metrics" / "spectrogram.json")
    reference = dict(line.split(",") for line in (records_dir / "REFERENCE.csv").read_text().split())
    table = read_records(spec)
    assert list(card["class_counts"]) == ["rest", "A"]
    assert card["class_counts"]["A"] == (table["source_label"] == "A").sum()
    assert (source_labels(table) == [reference[r] for r in table["record"]]).all()
    assert set(table["source_label"][table["label"] == "rest"]) == {"N", "O", "~"}
    assert (table["class_index"] == (table["label"] == "A")).all()
    load_spectrogram_set(spec)  # its consistency checks accept the rest class

    run_split(params.split, spec, tmp_path / "split.json")
    balance = run_balance(params.balance, spec, tmp_path / "split.json", tmp_path / "balance.json")
    for part in ("train", "val"):  # AF oversampled to the rest's count (balance.json: rows of records.csv)
        counts = np.bincount(table["class_index"].to_numpy()[balance[part]], minlength=2)
        assert counts[0] == counts[1] > 0
    run_chunk(params.chunk, spec, tmp_path / "split.json", tmp_path / "balance.json", tmp_path / "chunks",
              tmp_path / "metrics" / "chunk.json")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    name = "mean_spectrum-chunked"
    run_signals(records_dir, spec, tmp_path / "signals.pt")
    data = {"spectrogram": spec, "balance": tmp_path / "balance.json", "chunks": tmp_path / "chunks",
            "signals": tmp_path / "signals.pt"}
    summary = train_and_evaluate(params, name, data, records_dir, tmp_path)
    record = summary["val"]["record"]
    assert set(record["f1"]) == {"rest", "A"}
    predictions = pd.read_csv(tmp_path / "plots" / "confusion" / name / "val.csv", dtype={"record": str})
    own = predictions["record"].map(reference)
    for label in set(own) - {"A"}:
        members = predictions[own == label]
        assert record["af_specificity"][label] == pytest.approx((members["predicted"] != "A").mean(), abs=1e-6)
        low, high = record["ci"]["af_specificity"][label]
        assert low <= record["af_specificity"][label] <= high
        # the threshold that finds at least 95% of the AF recordings, read off their P(A)
        af = np.sort(predictions.loc[own == "A", "p_A"].to_numpy())
        threshold = af[int(np.floor((1 - AF_SENSITIVITY) * len(af)))]
        assert record["af_specificity_at_sensitivity_95"][label] == pytest.approx(
            (members["p_A"] < threshold).mean(), abs=1e-4)  # p_A rounded to 6 digits in the table
    assert set(record["af_specificity"]) == set(own) - {"A"}
