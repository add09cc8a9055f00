"""The rhythm ensemble (issue 24) as one servable model: its tree model without pickle, fitted on
a split's training recordings beside a trained network, saved as an MLflow model, scored on the
validation recordings through that model's path, registered without touching @champion, and
classifying files through `ecgpipe predict`."""
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from ecgpipe.core.errors import ModelFileError, OutputError
from ecgpipe.data.records import read_signal
from ecgpipe.ensemble.build import ALIAS
from ecgpipe.ensemble.model import ENSEMBLE_SPEC, RhythmEnsemble
from ecgpipe.ensemble.rhythm import FEATURE_NAMES
from ecgpipe.ensemble.trees import BoostedTrees
from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.readers import Signal
from tests.conftest import cli_exit_message


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_exported_trees_give_the_classifiers_probabilities_and_load_without_pickle(tmp_path, n_classes):
    rng = np.random.default_rng(n_classes)
    x = rng.normal(size=(500, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (2 * (x[:, 2] > 0.5) if n_classes == 4 else 0)
    x[rng.random(x.shape) < 0.15] = np.nan  # features a recording without beats does not have
    model = HistGradientBoostingClassifier(max_iter=40, early_stopping=False, random_state=0).fit(x, y)
    trees = BoostedTrees.from_sklearn(model)
    unseen = rng.normal(size=(300, 6))
    unseen[rng.random(unseen.shape) < 0.2] = np.nan
    expected = model.predict_proba(unseen)
    np.testing.assert_allclose(trees.predict_proba(unseen), expected, rtol=0, atol=1e-12)
    trees.save(tmp_path / "trees.npz")
    np.testing.assert_allclose(BoostedTrees.load(tmp_path / "trees.npz").predict_proba(unseen), expected,
                               rtol=0, atol=1e-12)

    np.savez(tmp_path / "objects.npz", tree_start=np.array([object()], dtype=object))  # would need pickle
    with pytest.raises(ModelFileError, match="objects.npz: not a saved tree model"):
        BoostedTrees.load(tmp_path / "objects.npz")
    with pytest.raises(ValueError, match=r"expected features of shape \(n, 6\)"):
        trees.predict_proba(unseen[:, :5])

    x[:, 5] = np.nan  # a feature no training recording has (too few beats in every one)
    fitted = BoostedTrees.fit(x, y, seed=0)
    shown = unseen.copy()
    shown[:, 5] = 3.0
    np.testing.assert_array_equal(fitted.predict_proba(unseen), fitted.predict_proba(shown))


def test_the_saved_ensemble_averages_its_network_and_its_trees(ensemble, prepared, records_dir):
    loaded = RhythmEnsemble.from_folder(ensemble["out"] / "model")
    network = Predictor.from_folder(ensemble["network"])
    record = json.loads(prepared["split"].read_text())["val"][0]
    signal = Signal(read_signal(records_dir / f"{record}.mat"), 300.0)
    trees = loaded.trees.predict_proba(loaded.features(signal))[0]
    np.testing.assert_allclose(loaded.predict_proba(signal), (network.predict_proba(signal) + trees) / 2, atol=1e-12)
    assert not np.allclose(trees, network.predict_proba(signal))  # two models, not one twice

    served = mlflow.pyfunc.load_model(str(ensemble["out"] / "model"))
    answer = served.predict(pd.DataFrame({"signal": [signal.samples.astype(float).tolist(), [0.0] * 10],
                                          "fs": [300.0, 300.0]}))
    assert answer.loc[0, "error"] == "" and answer.loc[0, "model"] == ensemble["run_id"]
    assert [answer.loc[0, f"p_{c}"] for c in loaded.class_names] == pytest.approx(loaded.predict_proba(signal).tolist())
    assert answer.loc[1, "error"] != "" and answer.loc[1, "label"] == ""  # a bad row is its own error
    # the served code is inference only: no training, pipeline, CLI, and no scikit-learn at serving
    code = {p.relative_to(ensemble["out"] / "model" / "code").as_posix()
            for p in (ensemble["out"] / "model" / "code").rglob("*.py")}
    assert "ecgpipe/ensemble/model.py" in code and "ecgpipe/ensemble/trees.py" in code
    assert not any(p.startswith(("ecgpipe/training", "ecgpipe/pipeline", "ecgpipe/cli")) for p in code)
    requirements = (ensemble["out"] / "model" / "requirements.txt").read_text()
    assert "wfdb==" in requirements and "scikit-learn" not in requirements


def test_the_validation_table_scores_the_network_as_its_evaluate_stage_did(ensemble, evaluated):
    table = pd.read_csv(ensemble["out"] / "validation.csv").set_index("figure")
    record = evaluated["summary"]["val"]["record"]
    for c, f1 in record["f1"].items():
        assert table.loc[f"f1_{c}", "network"] == pytest.approx(f1, abs=5e-5)
    for name in ("f1_A", "roc_auc"):
        row = table.loc[name]
        assert row["ensemble_ci_low"] <= row["ensemble"] <= row["ensemble_ci_high"]
        assert row["difference"] == pytest.approx(row["ensemble"] - row["network"], abs=1e-4)
        assert row["difference_ci_low"] <= row["difference"] <= row["difference_ci_high"]
    assert "ensemble − network" in (ensemble["out"] / "validation.md").read_text()


def test_the_ensemble_is_registered_as_a_candidate_and_predict_reads_it(ensemble, prepared, records_dir, capsys):
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("test-ensemble", ALIAS)
    assert version.run_id == ensemble["run_id"]
    assert set(client.get_registered_model("test-ensemble").aliases) == {ALIAS}  # @champion untouched
    assert client.get_model_version("test-ensemble", version.version).tags["ecgpipe.candidate-ensemble.by"]

    from ecgpipe.cli import main

    records = json.loads(prepared["split"].read_text())["val"][:2]
    files = [str(records_dir / f"{r}.mat") for r in records]
    tables = []
    for model in (str(ensemble["out"] / "model"), f"models:/test-ensemble@{ALIAS}"):
        out = ensemble["out"].parent / f"predicted-{len(tables)}.csv"
        main(["predict", "--model", model, "--out", str(out), *files])
        tables.append(pd.read_csv(out))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    loaded = RhythmEnsemble.from_folder(ensemble["out"] / "model")
    expected = loaded.predict_proba(Signal(read_signal(files[0]), 300.0))
    assert tables[0].loc[0, [f"p_{c}" for c in loaded.class_names]].tolist() == pytest.approx(expected, abs=1e-6)
    capsys.readouterr()


def test_a_folder_that_is_not_an_ensemble_output_is_refused_before_any_work(ensemble, prepared, tmp_path):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("keep me")
    message = cli_exit_message(["ensemble", "fit", "--network", str(ensemble["network"]), "--split",
                                str(prepared["split"]), "--out", str(keep)])
    assert str(keep) in message and "ensemble.json" in message
    assert [p.name for p in keep.iterdir()] == ["mine.txt"]
    with pytest.raises(OutputError):
        from ecgpipe.ensemble.build import check_out_dir

        check_out_dir(keep / "mine.txt")


def test_an_ensemble_made_with_other_features_is_refused_naming_the_file(ensemble, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(ensemble["out"] / "model", copy)
    spec_path = copy / "artifacts" / "ensemble" / ENSEMBLE_SPEC
    spec = json.loads(spec_path.read_text())
    spec["features"] = list(FEATURE_NAMES[:-1])
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(ModelFileError, match=f"{ENSEMBLE_SPEC}: made with other rhythm features"):
        RhythmEnsemble.from_folder(copy)


def test_the_shifted_network_is_scored_as_its_evaluate_stage_scored_it(ensemble, evaluated, prepared):
    shifts = pd.read_csv(ensemble["out"] / "shifts.csv")
    network = shifts[shifts["candidate"] == "network"].set_index("shift")
    stage = evaluated["summary"]["val_shifts"]
    assert set(network.index) == set(stage) and len(stage) == 2  # conftest's two shifts
    for name, figures in stage.items():  # the same draws per recording, through the same predictor
        assert network.loc[name, "f1_A"] == pytest.approx(figures["f1"]["A"], abs=5e-5)
        assert network.loc[name, "roc_auc"] == pytest.approx(figures["roc_auc"], abs=5e-5)
    gates = pd.read_csv(ensemble["out"] / "gate.csv").set_index("candidate")
    assert gates.loc["network", "min_shift_roc_auc"] == pytest.approx(
        evaluated["summary"]["val_worst_shift"]["min_roc_auc"], abs=5e-5)
    for candidate, row in gates.iterrows():  # the verdicts are the declared bound's (figures: 4 decimals)
        assert (row["gate"] == "passes") == (row["min_shift_roc_auc"] >= ensemble["gate_bound"] - 5e-5), candidate
    assert gates.loc["network", "gate"] == gates.loc["ensemble", "gate"] == "passes"
    if gates.loc["network", "min_shift_roc_auc"] > 0.5001:  # the rhythm trees on so few recordings: chance
        assert gates.loc["rhythm", "gate"].startswith("fails")
    # each shifted recording's features are kept under its own key, for the next network's ensemble
    val = json.loads(prepared["split"].read_text())["val"]
    keys = pd.read_csv(ensemble["features"], dtype={"record": str})["record"]
    assert sorted(k.split("|")[1] for k in keys if "|" in k) == sorted(list(stage) * len(val))
    assert "## The declared gate" in (ensemble["out"] / "validation.md").read_text()


def test_an_ensemble_that_fails_the_declared_gate_is_not_registered(ensemble, evaluated, prepared, records_dir,
                                                                    tmp_path):
    from ecgpipe.ensemble.build import Judging, Task, fit_ensemble
    from ecgpipe.evaluation.metrics import Bootstrap
    from ecgpipe.params import GateCheck

    s = prepared["params"].spectrogram
    before = mlflow.MlflowClient().search_model_versions("name='test-ensemble-gated'")
    made = fit_ensemble(ensemble["network"], records_dir, prepared["split"], tmp_path / "gated",
                        Task(list(s.classes), s.min_length, s.max_length, s.flat_records),
                        Judging(Bootstrap(50, 1, 0.95), gate={"record_f1_A": GateCheck(at_least=1.01),
                                                              "min_shift_roc_auc": GateCheck(at_least=0.5)}),
                        0, prepared["params"].mlflow.experiment_name, "test-ensemble-gated")
    assert made["registered"] is None and made["gate"].startswith("fails: record_f1_A ")
    assert "min_shift_roc_auc missing" in made["gate"]  # no shifts declared: the gate cannot pass on them
    assert mlflow.MlflowClient().search_model_versions("name='test-ensemble-gated'") == before == []
    saved = json.loads((tmp_path / "gated" / "ensemble.json").read_text())
    assert saved["registered"].startswith("not registered: the declared gate fails")
    assert (tmp_path / "gated" / "model" / "MLmodel").is_file()  # still saved and servable from the folder
