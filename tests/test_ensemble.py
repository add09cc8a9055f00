"""The rhythm ensemble, an experiment kind of the pipeline: its tree model without pickle, fitted by
its train stage on a split's training recordings beside a trained network, scored by its evaluate
stage through the served model's path and the one scoring path, and served as an MLflow model
(its `dvc repro`, report, registry and `ecgpipe predict`: tests/test_task.py)."""
import dataclasses
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from ecgpipe.core.errors import ModelFileError, StoreError
from ecgpipe.data.records import read_signal
from ecgpipe.ensemble.model import ENSEMBLE_SPEC, RhythmEnsemble
from ecgpipe.ensemble.rhythm import FEATURE_NAMES, read_features
from ecgpipe.ensemble.trees import BoostedTrees
from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.readers import Signal
from ecgpipe.pipeline.ensemble import KIND


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
    loaded = RhythmEnsemble.from_folder(ensemble["predictor"])
    network = Predictor.from_folder(ensemble["out"] / "predictors" / ensemble["network"])
    record = json.loads(prepared["split"].read_text())["val"][0]
    signal = Signal(read_signal(records_dir / f"{record}.mat"), 300.0)
    trees = loaded.trees.predict_proba(loaded.features(signal))[0]
    np.testing.assert_allclose(loaded.predict_proba(signal), (network.predict_proba(signal) + trees) / 2, atol=1e-12)
    assert not np.allclose(trees, network.predict_proba(signal))  # two models, not one twice
    # the default combiner is today's mean: nothing learned is saved, and ensemble.json is as before it
    assert loaded.combiner is None and "combiner" not in loaded.spec
    # the features stage's row of the recording is the one the served ensemble computes from its samples
    np.testing.assert_array_equal(read_features(ensemble["features"], [record]), loaded.features(signal))

    served = mlflow.pyfunc.load_model(str(ensemble["predictor"]))
    answer = served.predict(pd.DataFrame({"signal": [signal.samples.astype(float).tolist(), [0.0] * 10],
                                          "fs": [300.0, 300.0]}))
    assert answer.loc[0, "error"] == "" and answer.loc[0, "model"] == ensemble["run_id"]
    assert [answer.loc[0, f"p_{c}"] for c in loaded.class_names] == pytest.approx(loaded.predict_proba(signal).tolist())
    assert answer.loc[1, "error"] != "" and answer.loc[1, "label"] == ""  # a bad row is its own error
    # the served code is inference only: no training, pipeline, CLI, and no scikit-learn at serving
    code = {p.relative_to(ensemble["predictor"] / "code").as_posix()
            for p in (ensemble["predictor"] / "code").rglob("*.py")}
    assert "ecgpipe/ensemble/model.py" in code and "ecgpipe/ensemble/trees.py" in code
    assert not any(p.startswith(("ecgpipe/training", "ecgpipe/pipeline", "ecgpipe/cli")) for p in code)
    requirements = (ensemble["predictor"] / "requirements.txt").read_text()
    assert "wfdb==" in requirements and "scikit-learn" not in requirements


def test_the_evaluate_stage_scores_the_ensemble_as_it_serves_and_as_a_networks_stage_scores(ensemble, records_dir):
    """eval.json's figures are those of the served ensemble's probabilities (its confusion table), in
    the names of every experiment's; with all its weight on the network, the ensemble's figures are
    the network's evaluate stage's, under the shifts too (one scoring path for both kinds)."""
    from sklearn.metrics import f1_score, roc_auc_score

    from ecgpipe.params import EnsembleParams
    from ecgpipe.pipeline.ensemble import run_ensemble_evaluate, run_ensemble_train

    summary, name = ensemble["summary"], ensemble["name"]
    table = pd.read_csv(ensemble["out"] / "plots" / "confusion" / name / "val.csv")
    loaded = RhythmEnsemble.from_folder(ensemble["predictor"])
    first = loaded.predict_proba(Signal(read_signal(records_dir / f"{table['record'].iloc[0]}.mat"), 300.0))
    assert table.loc[0, ["p_N", "p_A"]].tolist() == pytest.approx(first.tolist(), abs=1e-6)
    record = summary["val"]["record"]
    assert set(summary["val"]) == {"record"}  # no chunks: a recording is the ensemble's unit
    assert record["f1"]["A"] == pytest.approx(f1_score(table["actual"], table["predicted"], pos_label="A",
                                                       average="binary"), abs=1e-6)
    assert record["roc_auc"] == pytest.approx(roc_auc_score(table["actual"] == "A", table["p_A"]), abs=1e-4)
    assert record["ci"]["f1"]["A"][0] <= record["f1"]["A"] <= record["ci"]["f1"]["A"][1]
    assert set(summary["val_shifts"]) == set(ensemble["params"].evaluate.shifts)  # conftest's two
    assert (ensemble["out"] / "plots" / "figures" / name / "confusion_val.png").is_file()

    network_only = dataclasses.replace(ensemble["params"], ensembles={ensemble["network"]: EnsembleParams(1.0, 0)})
    out = ensemble["out"]
    run_ensemble_train(network_only, ensemble["network"], records_dir, ensemble["features"],
                       ensemble["prepared"]["spectrogram"], ensemble["prepared"]["split"],
                       out / "predictors" / ensemble["network"], out / "weight1" / "model", out / "weight1" / "train.json")
    alone = run_ensemble_evaluate(network_only, ensemble["network"], records_dir, ensemble["features"],
                                  ensemble["prepared"]["spectrogram"], ensemble["prepared"]["split"],
                                  out / "weight1" / "model", out / "weight1" / "eval.json", out / "weight1" / "plots",
                                  out / "weight1" / "predictor")
    stage = json.loads((out / "metrics" / ensemble["network"] / "eval.json").read_text())
    for section in ("val_shifts", "val_worst_shift"):
        assert flat(alone[section]) == pytest.approx(flat(stage[section]), abs=2e-6), section
    assert flat(alone["val"]["record"]) == pytest.approx(flat(stage["val"]["record"]), abs=2e-6)


def flat(value, key: str = "") -> dict:
    """A nested eval.json section as {dotted key: number or text}."""
    if isinstance(value, dict):
        return {k: v for name, item in value.items() for k, v in flat(item, f"{key}.{name}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{key}[{i}]").items()}
    return {key: value}


def test_the_ensembles_run_is_tagged_with_the_machine_like_its_networks(ensemble, evaluated):
    """A study's report checks that all its folds were made on one machine, from the runs' tags: the
    ensemble's run carries the same machine tags as the network's train run."""
    client = mlflow.MlflowClient(evaluated["uri"])
    network_tags = client.get_run(evaluated["trained"].run_id).data.tags
    tags = client.get_run(ensemble["run_id"]).data.tags
    for key in ("cpu", "device", "torch_version"):
        assert tags[key] == network_tags[key] != "", key
    assert tags["ecgpipe.kind"] == KIND


def test_an_ensemble_made_with_other_features_is_refused_naming_the_file(ensemble, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(ensemble["predictor"], copy)
    spec_path = copy / "artifacts" / "ensemble" / ENSEMBLE_SPEC
    spec = json.loads(spec_path.read_text())
    spec["features"] = list(FEATURE_NAMES[:-1])
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(ModelFileError, match=f"{ENSEMBLE_SPEC}: made with other rhythm features"):
        RhythmEnsemble.from_folder(copy)
    spec["features"] = list(FEATURE_NAMES)
    spec["decision"] = {"positive": "A"}
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(ModelFileError, match=f"{ENSEMBLE_SPEC}: decision: expected positive, threshold"):
        RhythmEnsemble.from_folder(copy)


def test_the_features_table_is_read_by_record_and_a_wrong_one_is_refused_naming_it(ensemble, tmp_path):
    table = pd.read_csv(ensemble["features"], dtype={"record": str})
    assert list(table.columns) == ["record", *FEATURE_NAMES]
    records = list(table["record"][:3])
    np.testing.assert_array_equal(read_features(ensemble["features"], records[::-1]),
                                  table.set_index("record").loc[records[::-1]].to_numpy())
    with pytest.raises(StoreError, match=r"features.csv: no features of 1 recording\(s\) \(e.g. X99\)"):
        read_features(ensemble["features"], ["X99"])
    other = tmp_path / "other.csv"
    table.drop(columns=FEATURE_NAMES[-1]).to_csv(other, index=False)
    with pytest.raises(StoreError, match="other.csv: not the features stage's table"):
        read_features(other, records)
    with pytest.raises(StoreError, match="missing.csv: missing; run the features stage"):
        read_features(tmp_path / "missing.csv", records)


def test_features_computed_in_several_processes_are_those_of_one(monkeypatch, records_dir):
    from ecgpipe.ensemble import rhythm

    samples = [read_signal(p) for p in sorted(records_dir.glob("*.mat"))[:6]]
    serial = rhythm.feature_rows(samples, workers=1)
    monkeypatch.setattr(rhythm, "PARALLEL_FROM", 0)
    np.testing.assert_array_equal(rhythm.feature_rows(samples, workers=2), serial)
    assert serial.shape == (6, len(FEATURE_NAMES))


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_learned_combiner_gives_scikit_learns_probabilities_and_round_trips(n_classes):
    from sklearn.linear_model import LogisticRegression

    from ecgpipe.ensemble.combiner import LOGISTIC, SETTINGS, LogisticCombiner, combiner_inputs
    from ecgpipe.params import ENSEMBLE_COMBINERS

    assert LOGISTIC in ENSEMBLE_COMBINERS  # the name params take is the one the pipeline fits
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 300)
    network = rng.dirichlet(np.ones(n_classes), 300) * 0.5 + np.eye(n_classes)[y] * 0.5  # informative
    rhythm = rng.dirichlet(np.ones(n_classes), 300)
    network[0] = np.eye(n_classes)[0]  # a probability of exactly 0: its log is floored, not -inf
    names = ["N", "A", "O", "~"][:n_classes]
    combiner = LogisticCombiner.fit(network, rhythm, y, names)
    expected = LogisticRegression(**SETTINGS).fit(combiner_inputs(network, rhythm), y).predict_proba(
        combiner_inputs(network, rhythm))
    np.testing.assert_allclose(combiner(network, rhythm), expected, rtol=0, atol=1e-12)
    again = LogisticCombiner.from_dict(json.loads(json.dumps(combiner.to_dict())), n_classes)
    np.testing.assert_array_equal(again(network, rhythm), combiner(network, rhythm))
    with pytest.raises(ValueError, match=rf"coef of shape \({1 if n_classes == 2 else n_classes}, {2 * n_classes}\)"):
        LogisticCombiner.from_dict({**combiner.to_dict(), "coef": [[0.0]]}, n_classes)
    with pytest.raises(ValueError, match="no recording of class A among those the combiner is fitted on"):
        LogisticCombiner.fit(network[y != 1], rhythm[y != 1], y[y != 1], names)


def test_a_learned_combiner_is_fitted_on_the_held_out_recordings_and_served_from_its_file(ensemble, records_dir,
                                                                                           tmp_path):
    """``combiner: logistic``: the regression is fitted on the split's recordings held out of training
    (the network's and the trees' probabilities of those), the served threshold on its output there, and
    the saved ensemble serves what was fitted; without held-out recordings the key is named. A damaged
    combiner in ensemble.json is refused naming the file."""
    from sklearn.linear_model import LogisticRegression

    from ecgpipe.core.errors import ParamsError
    from ecgpipe.ensemble.combiner import SETTINGS, combiner_inputs
    from ecgpipe.params import EnsembleParams
    from ecgpipe.pipeline.ensemble import member_probs, run_ensemble_train, split_recordings

    prepared, network = ensemble["prepared"], ensemble["network"]
    split = json.loads(prepared["split"].read_text())
    labels = pd.read_csv(prepared["spectrogram"] / "records.csv").set_index("record")["class_index"]
    held = [r for k in (0, 1) for r in [r for r in split["train"] if labels[r] == k][:6]]  # both classes
    split = {**split, "train": [r for r in split["train"] if r not in held], "calibration": held}
    (tmp_path / "split.json").write_text(json.dumps(split))
    params = dataclasses.replace(ensemble["params"], ensembles={network: EnsembleParams(0.5, 0, "logistic")},
                                 evaluate=dataclasses.replace(ensemble["params"].evaluate, af_sensitivity=0.95))
    predictor = ensemble["out"] / "predictors" / network
    summary = run_ensemble_train(params, network, records_dir, ensemble["features"], prepared["spectrogram"],
                                 tmp_path / "split.json", predictor, tmp_path / "model", tmp_path / "train.json")
    loaded = RhythmEnsemble.from_folder(tmp_path / "model" / "ensemble")
    assert summary["calibration_recordings"] == len(held) and loaded.combiner is not None
    recordings = split_recordings(prepared["spectrogram"], tmp_path / "split.json", "calibration", records_dir)
    members = member_probs(loaded, recordings.signals, recordings.rows,
                           read_features(ensemble["features"], list(recordings.records)), 64, "cpu")
    expected = LogisticRegression(**SETTINGS).fit(combiner_inputs(*members), recordings.y)
    np.testing.assert_allclose(loaded.combine(*members), expected.predict_proba(combiner_inputs(*members)), atol=1e-9)
    assert loaded.decision is not None and summary["threshold_A"] == loaded.decision.threshold
    signal = recordings.signals[0]
    network_p, trees_p = loaded.predictor.predict_proba(signal), loaded.trees.predict_proba(loaded.features(signal))
    np.testing.assert_allclose(loaded.predict_proba(signal), expected.predict_proba(
        combiner_inputs(network_p[None, :], trees_p))[0], atol=1e-9)

    spec = json.loads((tmp_path / "model" / "ensemble" / ENSEMBLE_SPEC).read_text())
    spec["combiner"]["intercept"] = [0.0, 0.0, 0.0]
    (tmp_path / "model" / "ensemble" / ENSEMBLE_SPEC).write_text(json.dumps(spec))
    with pytest.raises(ModelFileError, match=r"ensemble.json: combiner: expected kind 'logistic'.*intercept of 1"):
        RhythmEnsemble.from_folder(tmp_path / "model" / "ensemble")
    with pytest.raises(ParamsError, match=rf"ensembles.{network}.combiner: logistic is fitted on the recordings held "
                                          "out of training; expected split.calibration above 0"):
        run_ensemble_train(params, network, records_dir, ensemble["features"], prepared["spectrogram"],
                           prepared["split"], predictor, tmp_path / "none", tmp_path / "none.json")
    assert not (tmp_path / "none").exists()


def test_an_ensemble_needs_its_networks_task_and_a_known_network(ensemble, records_dir, tmp_path):
    from ecgpipe.core.errors import ParamsError
    from ecgpipe.params import parse_params
    from ecgpipe.pipeline.ensemble import run_ensemble_train
    from tests.conftest import small_params_dict

    raw = small_params_dict()
    raw["ensembles"] = {"nope": {}}
    with pytest.raises(ParamsError, match=r"params: ensembles.nope: expected a network trained beside it"):
        parse_params(raw)
    raw["ensembles"] = {}
    raw["spectrogram"]["classes"] = ["N", "A", "O", "~"]
    with pytest.raises(ParamsError, match=r"ensembles.mean_spectrum-chunked: no such ensemble"):
        run_ensemble_train(parse_params(raw), ensemble["network"], records_dir, ensemble["features"],
                           tmp_path, tmp_path, tmp_path, tmp_path / "m", tmp_path / "t.json")
    raw["ensembles"] = {ensemble["network"]: {}}
    with pytest.raises(StoreError, match=r"the network's classes are \['N', 'A'\]; expected the task's"):
        run_ensemble_train(parse_params(raw), ensemble["network"], records_dir, ensemble["features"],
                           tmp_path, tmp_path, ensemble["out"] / "predictors" / ensemble["network"], tmp_path / "m",
                           tmp_path / "t.json")
    assert not (tmp_path / "m").exists()


def test_the_model_card_of_a_shipped_ensemble_says_what_it_is(ensemble):
    from ecgpipe.ensemble.model import ENSEMBLE_SPEC, network_files
    from ecgpipe.pipeline.report import shift_table
    from ecgpipe.reporting.model_card import Shipped, model_card

    predictor = ensemble["predictor"]
    network = json.loads((network_files(predictor) / "model.json").read_text())
    assert network["model"] == "mean_spectrum"  # the ensemble's own copy of its network
    spec = json.loads((predictor / "artifacts" / "ensemble" / ENSEMBLE_SPEC).read_text())
    card = model_card(Shipped("test-af", ensemble["name"], ensemble["run_id"], "t", "passed its gate"), network,
                      ensemble["summary"], shift_table([ensemble["name"]], ensemble["out"] / "metrics"), 1, 0.95, spec)
    assert f"A rhythm ensemble ({ensemble['name']})" in card and "a `mean_spectrum` network beside" in card
    assert f"{len(FEATURE_NAMES)} rhythm features" in card and "weight 0.5 on the network's" in card
    assert f"on {ensemble['summary']['val']['record']['n']:,} validation recordings" in card
    # a detector that has seen every rhythm says its false alarms on each at the served label
    detector = json.loads(json.dumps(ensemble["summary"]))
    detector["val"]["record"]["af_specificity"] = {"N": 0.98, "O": 0.886}
    card = model_card(Shipped("test-af", ensemble["name"], ensemble["run_id"], "t", "passed its gate"), network,
                      detector, shift_table([ensemble["name"]], ensemble["out"] / "metrics"), 1, 0.95, spec)
    assert "2.0% of those labelled `N` are called AF" in card and "11.4% of those labelled `O`" in card
    # a learned combiner (ensemble.json has one only then) is named in place of the weight it does not use
    learned = {**spec, "combiner": {"kind": "logistic"}}
    card = model_card(Shipped("test-af", ensemble["name"], ensemble["run_id"], "t", "passed its gate"), network,
                      ensemble["summary"], shift_table([ensemble["name"]], ensemble["out"] / "metrics"), 1, 0.95, learned)
    assert "joined by a logistic regression fitted on recordings held out of training" in card and "weight 0.5" not in card
