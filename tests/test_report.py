"""The report: intervals on every recording figure, paired comparisons with the champion, and the
champion scored once on a held-out test split."""
import json
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ecgpipe.params import parse_params
from ecgpipe.pipeline.balance import run_balance
from ecgpipe.pipeline.chunk import run_chunk
from ecgpipe.pipeline.report import report_sections, run_report
from ecgpipe.pipeline.signals import run_signals
from ecgpipe.pipeline.spectrogram import run_spectrogram
from ecgpipe.pipeline.split import run_split

CHAMPION_CONFIG = "raw_resnet-robust_crop"


def _with_mislabelled_af(records_dir, out):
    """A copy of the synthetic records in which every other AF record carries a normal rhythm (same
    length, label kept): no model can then be perfect on AF, so comparisons with the champion can fail."""
    import shutil

    import numpy as np

    from tests.synthetic import synthetic_signal, write_record

    shutil.copytree(records_dir, out)
    labels = dict(line.split(",") for line in (out / "REFERENCE.csv").read_text().split())
    mislabelled = sorted(r for r, label in labels.items() if label == "A")[1::2]
    rng = np.random.default_rng(1)
    for record in mislabelled:
        length = int((out / f"{record}.hea").read_text().split()[3])
        write_record(out, record, synthetic_signal("N", length, rng))
    return mislabelled


@pytest.fixture(scope="module")
def reported(records_dir, tmp_path_factory):
    """Five tiny experiments (three on spectrograms, two on the raw signal) on a split with held-out
    test recordings, trained, evaluated, reported, on records where some AF looks normal."""
    from tests.conftest import small_params_dict, train_and_evaluate

    raw = small_params_dict()
    raw["split"].update(train=0.6, val=0.2, test=0.2, stratify=True)
    raw["evaluate"]["bootstrap_resamples"] = 200
    raw["experiments"]["raw_resnet-random_crop"] = {"model": "raw_resnet", "loader": "random_crop", "crop_samples": 600,
                                                    "epochs": 10, "lr": 0.003, "lr_schedule": "cosine"}
    # a spectrogram network with every robustness option, and a shift that changes nothing besides
    # the project's own shifts
    raw["experiments"]["fully_connected-robust_crop"] = {
        "model": "fully_connected", "loader": "random_crop", "epochs": 2, "lr": 0.01, "lr_schedule": "cosine",
        "conditioning": {"highpass_hz": 0.5, "lowpass_hz": 40, "amplitude": "mad"}, "log_floor": 0.001,
        "augment": {"gain": [0.5, 2.0], "offset": 300, "noise_snr_db": [10, 40], "stretch": 0.1, "dropout_s": 0.2}}
    import yaml

    from tests.conftest import ROOT

    project = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["evaluate"]["shifts"] = {"gain_1x": {"kind": "gain", "factor": 1.0}, **project["evaluate"]["shifts"]}
    # the configuration that ships as the champion (params.yaml's raw_resnet-robust_crop), shortened
    champion = project["experiments"][CHAMPION_CONFIG]
    raw["experiments"][CHAMPION_CONFIG] = {**champion, "crop_samples": 600, "epochs": 10}  # enough to tell A from N
    # a gate whose verdict no CPU's rounding can change (whether an experiment was trained robust):
    # the plain networks are refused, so the champion is not simply the best figure
    raw["report"]["gate"] = {"robust": {"at_least": 1}}
    params = parse_params(raw)
    out = tmp_path_factory.mktemp("reported")
    source, records_dir = records_dir, out / "records"
    mislabelled = _with_mislabelled_af(source, records_dir)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        spectrogram, chunks = out / "spectrogram", out / "chunks"
        run_spectrogram(params.spectrogram, records_dir, spectrogram, out / "metrics" / "spectrogram.json")
        run_split(params.split, spectrogram, out / "split.json")
        run_balance(params.balance, spectrogram, out / "split.json", out / "balance.json")
        run_chunk(params.chunk, spectrogram, out / "split.json", out / "balance.json", chunks, out / "metrics" / "chunk.json")
        run_signals(records_dir, spectrogram, out / "signals.pt")
        for name in params.experiments:
            train_and_evaluate(params, name, {"spectrogram": spectrogram, "balance": out / "balance.json", "chunks": chunks,
                                              "signals": out / "signals.pt"}, records_dir, out)
        table = run_report(**report_sections(params), metrics_dir=out / "metrics", models_dir=out / "models",
                           out_dir=out / "reports", plots_dir=out / "plots", chunks_dir=chunks,
                           spectrogram_dir=spectrogram, records_dir=records_dir)
    split = json.loads((out / "split.json").read_text())
    # the data can fail the checks below only if a mislabelled record is scored, and one is learnt from
    assert set(mislabelled) & set(split["val"]) and set(mislabelled) & set(split["train"]), (mislabelled, split)
    return {"out": out, "params": params, "table": table, "uri": uri, "records": records_dir}


def test_every_recording_figure_has_an_interval(reported):
    out, table = reported["out"], reported["table"]
    for name in reported["params"].experiments:
        evaluation = json.loads((out / "metrics" / name / "eval.json").read_text())
        # no test split: the report scores it, for the champion only; unseen: the O and ~ recordings
        assert set(evaluation) == {"val", "val_shifts", "val_worst_shift", "unseen"}
        record = evaluation["val"]["record"]
        low, high = record["ci"]["f1"]["A"]
        assert low <= record["f1"]["A"] <= high
        assert record["ci"]["roc_auc"][0] <= record["roc_auc"] <= record["ci"]["roc_auc"][1]
        row = table.set_index("experiment").loc[name]
        assert (row["record_f1_A_ci_low"], row["record_f1_A_ci_high"]) == pytest.approx((low, high), abs=1e-6)
        unseen = evaluation["unseen"]
        assert row["unseen_af_specificity_O"] == pytest.approx(unseen["af_specificity"]["O"], abs=1e-6)
        assert row["unseen_af_specificity_~_ci_high"] == pytest.approx(unseen["ci"]["af_specificity"]["~"][1], abs=1e-6)
        run_id = json.loads((out / "models" / name / "mlflow_run.json").read_text())["run_id"]
        metrics = MlflowClient(reported["uri"]).get_run(run_id).data.metrics
        assert metrics["val_record_f1_A_ci_low"] == pytest.approx(low, abs=1e-6)
        assert metrics["val_record_roc_auc_ci_high"] == pytest.approx(record["ci"]["roc_auc"][1], abs=1e-6)
    markdown = (out / "reports" / "results.md").read_text()
    assert re.search(r"\| \d\.\d{3} \[\d\.\d{3}–\d\.\d{3}\] \|", markdown)  # 0.957 [0.930–0.980]
    unseen_section = markdown.split("## On rhythms the task never saw")[1].split("\n## ")[0]
    assert "| experiment | unseen_af_specificity_O | unseen_af_specificity_~ |" in unseen_section


def test_a_shift_that_changes_nothing_gives_the_unshifted_figures(reported):
    out = reported["out"]
    for name in reported["params"].experiments:
        evaluation = json.loads((out / "metrics" / name / "eval.json").read_text())
        record, same = evaluation["val"]["record"], evaluation["val_shifts"]["gain_1x"]
        for figure in ("roc_auc", "f1", "recall", "specificity"):
            assert same[figure] == record[figure], (name, figure)
            assert same["ci"][figure] == record["ci"][figure], (name, figure)
        assert same["change"] == {"f1_A": [0.0, 0.0, 0.0], "roc_auc": [0.0, 0.0, 0.0]}
        # the project's shifts were all scored; sensitivity of AF is the recall of A
        assert set(evaluation["val_shifts"]) == set(reported["params"].evaluate.shifts)
        worst = evaluation["val_worst_shift"]
        assert worst["f1_A"] == min(v["f1"]["A"] for v in evaluation["val_shifts"].values())
        assert evaluation["val_shifts"][worst["shift"]]["f1"]["A"] == worst["f1_A"]


def test_shifts_reach_mlflow_and_the_report(reported):
    out, params = reported["out"], reported["params"]
    shifts = pd.read_csv(out / "reports" / "shifts.csv")
    assert len(shifts) == len(params.experiments) * len(params.evaluate.shifts)
    table = reported["table"].set_index("experiment")
    markdown = (out / "reports" / "results.md").read_text()
    assert "## Under device shifts" in markdown
    for name in params.experiments:
        eval_json = json.loads((out / "metrics" / name / "eval.json").read_text())
        assert table.loc[name, "worst_shift"] == eval_json["val_worst_shift"]["shift"]
        run_id = json.loads((out / "models" / name / "mlflow_run.json").read_text())["run_id"]
        metrics = MlflowClient(reported["uri"]).get_run(run_id).data.metrics
        assert metrics["val_shift_gain_1x_f1_A"] == metrics["val_record_f1_A"]
        noisy = eval_json["val_shifts"]["noise_20db"]
        assert metrics["val_shift_noise_20db_specificity_A"] == pytest.approx(noisy["specificity"]["A"], abs=1e-6)
        assert metrics["val_shift_noise_20db_change_f1_A_ci_low"] == pytest.approx(noisy["change"]["f1_A"][1], abs=1e-6)
        row = shifts[(shifts["experiment"] == name) & (shifts["shift"] == "resample_500hz")].iloc[0]
        assert row["f1"] == pytest.approx(eval_json["val_shifts"]["resample_500hz"]["f1"]["A"], abs=1e-4)
        assert re.search(rf"\| {re.escape(name)} \|( \d\.\d{{3}} \([+-]\d\.\d{{3}}\) \|){{{len(params.evaluate.shifts)}}}",
                         markdown), name
    # robust against plain: the same network without the options, paired on the clean recordings
    robust_section = markdown.split("### Robust against plain")[1]
    assert re.search(r"\| fully_connected-robust_crop \| fully_connected-random_chunk \| \d\.\d{3} \| \d\.\d{3} \| "
                     r"-?\d\.\d{3} [\[(]", robust_section)  # both figures, then the difference with its interval
    assert "mean_spectrum-chunked |" not in robust_section  # another network: not its plain version
    # the robust model carries its options to serving: saved in model.json, applied by its predictor
    spec = json.loads((out / "models" / "fully_connected-robust_crop" / "model.json").read_text())
    assert spec["preprocessing"]["featurizer"]["conditioning"]["lowpass_hz"] == 40
    assert spec["preprocessing"]["featurizer"]["log_floor"] == 0.001
    plain = json.loads((out / "models" / "mean_spectrum-chunked" / "model.json").read_text())
    assert "conditioning" not in plain["preprocessing"]["featurizer"]


def test_experiments_are_compared_with_the_champion(reported):
    out = reported["out"]
    comparison = pd.read_csv(out / "reports" / "comparison.csv").to_dict("records")
    champion = json.loads((out / "reports" / "champion.json").read_text())["experiment"]
    table = reported["table"].set_index("experiment")
    assert table.loc[champion, "record_f1_A"] < 1  # the data: a champion that can be beaten
    assert set(table.index[table["robust"] < 1]) == {"mean_spectrum-chunked", "fully_connected-random_chunk",
                                                     "raw_resnet-random_crop"}  # refused by the gate
    verdicts = {r["experiment"]: r["verdict"] for r in comparison}
    assert verdicts[champion] == "champion"
    for row in comparison:
        name = row["experiment"]
        assert row["difference_ci_low"] <= row["difference"] <= row["difference_ci_high"]
        # the experiment's F1(A) less the champion's, on the same recordings (4 decimals in the csv)
        assert row["difference"] == pytest.approx(table.loc[name, "record_f1_A"] - table.loc[champion, "record_f1_A"],
                                                  abs=2e-4), name
        if name != champion:
            assert row["verdict"] == ("worse" if row["difference_ci_high"] < 0 else "better"
                                      if row["difference_ci_low"] > 0 else "not distinguishable"), name
        if table.loc[name, "robust"] == 1:  # eligible: the champion is not worse than any of them
            assert row["verdict"] != "better", name
    markdown = (out / "reports" / "results.md").read_text()
    assert "## Compared with the champion" in markdown and f"The champion, `{champion}`" in markdown


def test_champion_is_scored_once_on_the_test_split(reported):
    out = reported["out"]
    champion = json.loads((out / "reports" / "champion.json").read_text())
    test = champion["test"]["record"]
    assert test["n"] > 0 and test["ci"]["f1"]["A"][0] <= test["f1"]["A"] <= test["ci"]["f1"]["A"][1]
    markdown = (out / "reports" / "results.md").read_text()
    assert "## Held-out test recordings: the champion, once" in markdown
    assert f"scored on the {test['n']:,} test recordings" in markdown
    client = MlflowClient(reported["uri"])
    for name in reported["params"].experiments:
        run_id = json.loads((out / "models" / name / "mlflow_run.json").read_text())["run_id"]
        run = client.get_run(run_id)
        logged = {k for k in run.data.metrics if k.startswith("test_")}
        if name == champion["experiment"]:
            assert run.data.metrics["test_record_f1_A"] == pytest.approx(test["f1"]["A"], abs=1e-6)
            assert "test_record_f1_A_ci_low" in logged and run.info.status == "FINISHED"
        else:
            assert logged == set()  # no other experiment is ever scored on the test recordings


def _val_predictions(out, name) -> pd.DataFrame:
    return pd.read_csv(out / "plots" / "confusion" / name / "val.csv", dtype={"record": str}).set_index("record")


def test_the_champions_configuration_end_to_end(reported, monkeypatch):
    """raw_resnet with conditioning and augmentation (what ships as @champion): trained, evaluated,
    then predicted by `ecgpipe predict` and by the MLflow pyfunc model, with the same numbers."""
    import mlflow
    import numpy as np
    import scipy.io

    from ecgpipe.inference.predictor import predict_files
    from ecgpipe.tracking.registry import load_predictor

    out = reported["out"]
    expected = _val_predictions(out, CHAMPION_CONFIG)
    assert set(expected["predicted"]) == {"N", "A"}  # else the labels compared below say nothing
    spec = json.loads((out / "models" / CHAMPION_CONFIG / "model.json").read_text())
    assert spec["preprocessing"]["featurizer"]["conditioning"] == {"highpass_hz": 0.5, "lowpass_hz": 40.0,
                                                                   "amplitude": "mad", "filter_order": 2}
    records = list(expected.index)  # every validation recording: both predicted labels among them
    files = [str(reported["records"] / f"{r}.mat") for r in records]
    rows = predict_files(load_predictor(str(out / "predictors" / CHAMPION_CONFIG)), files)
    assert [r["error"] for r in rows] == [""] * len(rows)
    np.testing.assert_allclose([r["p_A"] for r in rows], expected.loc[records, "p_A"], atol=2e-6)  # val.csv: 6 decimals
    assert [r["label"] for r in rows] == expected.loc[records, "predicted"].tolist()
    served = mlflow.pyfunc.load_model(str(out / "predictors" / CHAMPION_CONFIG))
    signals = [scipy.io.loadmat(f)["val"][0].astype(float).tolist() for f in files]
    answer = served.predict(pd.DataFrame({"signal": signals, "fs": [300.0] * len(signals)}))
    np.testing.assert_allclose(answer["p_A"].astype(float), [r["p_A"] for r in rows], rtol=0, atol=1e-12)
    assert answer["error"].tolist() == [""] * len(rows)


def test_registry_and_run_uris_predict_what_the_champion_scored(reported, monkeypatch):
    """`--model models:/NAME@champion` and `runs:/ID/predictor`: the success path, not only failures."""
    import numpy as np

    from ecgpipe.inference.predictor import predict_files
    from ecgpipe.tracking.registry import load_predictor

    out = reported["out"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reported["uri"])
    champion = json.loads((out / "reports" / "champion.json").read_text())
    expected = _val_predictions(out, champion["experiment"])
    records = list(expected.index[:4])
    files = [str(reported["records"] / f"{r}.mat") for r in records]
    for uri in (champion["model_uri"], f"runs:/{champion['run_id']}/predictor"):
        rows = predict_files(load_predictor(uri), files)
        np.testing.assert_allclose([r["p_A"] for r in rows], expected.loc[records, "p_A"], atol=2e-6, err_msg=uri)
