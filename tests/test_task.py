"""Tasks: the four-class variant and AF against the rest, each a family of stages in dvc.yaml."""
import json
import re
import sys

import pandas as pd
import pytest
import yaml

from ecgpipe.core.errors import ParamsError
from ecgpipe.params import TaskParams, load_params, parse_params
from ecgpipe.pipeline.task import task_params, task_raw_params
from tests.conftest import ROOT

FOUR = ["N", "A", "O", "~"]


def test_the_projects_four_class_task():
    params = task_params(ROOT / "params.yaml", "four_class")
    assert params.spectrogram.classes == FOUR
    assert set(params.experiments) == {"raw_resnet-robust_crop"} and params.tasks == {}  # task_experiments
    # every recording that the robust ResNet's stretched 9-s crop fits (all but 14 of CinC's 8,528)
    resnet = params.experiments["raw_resnet-robust_crop"]
    assert params.spectrogram.min_length == resnet.augment.input_samples(params.crop_span(resnet)) > 2714
    assert params.report.champion_metric == "record_challenge_score"
    assert params.report.gate  # the robust networks are gated on AF under the device shifts
    assert params.mlflow.experiment_name != load_params(ROOT / "params.yaml").mlflow.experiment_name


def test_a_bad_task_is_refused_naming_the_key(small_params, tmp_path):
    small_params["tasks"] = {"t": {"set": {"spectrogram.clases": FOUR}}}
    small_params["task_experiments"] = ["mean_spectrum-chunked"]
    with pytest.raises(ParamsError, match=r"params: tasks.t.set.spectrogram.clases: expected a key of params.yaml "
                                          r"\(spectrogram has \['batch_size', 'classes', .*\]\), got 'spectrogram.clases'"):
        parse_params(small_params)  # when any stage reads the file, not only when the task runs
    # a key of the schema that this params.yaml leaves out: the task's own check still names it
    with pytest.raises(ParamsError, match=r"spectrogram.clases: no such key in params.yaml"):
        task_raw_params(small_params, TaskParams({"spectrogram.clases": FOUR}))
    small_params["tasks"]["t"]["set"] = {"spectrogram.classes": ["N", "X"]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params))
    with pytest.raises(ParamsError, match=r"task t: params: spectrogram.classes: expected labels from"):
        task_params(path, "t")
    small_params["tasks"]["t"] = {"set": {}}
    small_params["task_experiments"] = ["nope"]
    path.write_text(yaml.safe_dump(small_params))
    with pytest.raises(ParamsError, match=r"task_experiments: expected experiments of this file .*got 'nope'"):
        parse_params(small_params)
    small_params["task_experiments"] = []
    with pytest.raises(ParamsError, match=r"task_experiments: expected at least one experiment for the tasks"):
        parse_params(small_params)
    small_params["task_experiments"] = ["mean_spectrum-chunked"]
    small_params["tasks"] = {"a/b": {"set": {}}}
    with pytest.raises(ParamsError, match=r"tasks.a/b: expected a name of letters"):
        parse_params(small_params)


def test_a_task_is_a_family_of_stages_beside_the_notebooks(committed_project, small_params, monkeypatch):
    """A four-class task on synthetic recordings through `dvc repro`: its own stages (task_*@four_class),
    outputs under tasks/four_class (per-class metrics, the challenge score, MLflow, the report and its
    registered model), the notebook's stages untouched; changing the task's values reruns only its stages."""
    small_params["experiments"]["raw_resnet-random_crop"] = {
        "model": "raw_resnet", "loader": "random_crop", "crop_samples": 600, "epochs": 2, "lr": 0.003,
        "lr_schedule": "cosine"}
    small_params["tasks"] = {"four_class": {"set": {
        "spectrogram.classes": FOUR, "mlflow.experiment_name": "synthetic-four",
        "report.champion_metric": "record_challenge_score", "report.registered_model": "synthetic-rhythm",
        "report.gate": {}, "split.calibration": 0.2, "evaluate.af_sensitivity": 0.95}}}
    small_params["task_experiments"] = ["mean_spectrum-chunked", "raw_resnet-random_crop"]
    small_params["task_ensembles"] = {"raw_resnet-random_crop": {"network_weight": 0.5, "seed": 0}}
    project, run = committed_project(small_params)
    dvc = (sys.executable, "-m", "dvc")
    stages = run(*dvc, "stage", "list", "--name-only").split()
    assert {"task_train@four_class-mean_spectrum-chunked", "task_evaluate@four_class-raw_resnet-random_crop",
            "task_ensemble_train@four_class-raw_resnet-random_crop",
            "task_ensemble_evaluate@four_class-raw_resnet-random_crop", "task_report@four_class"} <= set(stages)
    run(*dvc, "repro", "task_report@four_class")
    assert not (project / "metrics").exists() and not (project / "models").exists()  # the notebook's: not run
    task = project / "tasks" / "four_class"
    ensemble = "raw_resnet-random_crop+rhythm"  # the rhythm ensemble: an experiment of the task like the networks
    for name in ("mean_spectrum-chunked", "raw_resnet-random_crop", ensemble):
        evaluation = json.loads((task / "metrics" / name / "eval.json").read_text())
        record = evaluation["val"]["record"]
        assert set(record["f1"]) == set(FOUR) and set(record["ci"]["f1"]) == set(FOUR)
        assert record["challenge_score"] == pytest.approx(sum(record["f1"][c] for c in "NAO") / 3, abs=2e-6)
        assert "unseen" not in evaluation  # every label is one of the task's classes
        confusion = pd.read_csv(task / "plots" / "confusion" / name / "val.csv")
        assert set(confusion.columns) >= {f"p_{c}" for c in FOUR}
    assert not (task / "metrics" / "fully_connected-random_chunk").exists()  # not a task experiment
    # the served operating point, fitted on the training recordings the split held out of training
    split = json.loads((task / "data" / "split.json").read_text())
    assert split["calibration"] and not set(split["calibration"]) & set(split["train"] + split["val"])
    for name in ("mean_spectrum-chunked", "raw_resnet-random_crop", ensemble):
        section = json.loads((task / "metrics" / name / "eval.json").read_text())["calibration"]
        threshold = section["decision"]["threshold"]
        assert section["decision"] == {"positive": "A", "threshold": threshold, "sensitivity": 0.95}
        assert section["temperature"] > 0 and section["ci"][0] <= section["ece"] <= section["ci"][1]
        predictions = pd.read_csv(task / "plots" / "confusion" / name / "val.csv")
        called_af = predictions["predicted"] == "A"
        assert (called_af == (predictions["p_A"] >= threshold - 1e-6)).all()  # the served rule, not the argmax
        assert (task / "plots" / "figures" / name / "reliability_val.png").is_file()
        if name == ensemble:  # its decision, fitted on the held-out recordings by its train stage
            served = json.loads((task / "predictors" / name / "artifacts" / "ensemble" / "ensemble.json").read_text())
            trained = json.loads((task / "metrics" / name / "train.json").read_text())["threshold_A"]
            assert served["decision"]["threshold"] == trained == pytest.approx(threshold, abs=1e-6)
            assert section["temperature"] == 1.0  # its network's is inside it
            continue
        served = json.loads((task / "predictors" / name / "artifacts" / "predictor" / "predictor.json").read_text())
        assert served["decision"] == {**section["decision"], "threshold": pytest.approx(threshold, abs=1e-6)}
        assert served["temperature"] == pytest.approx(section["temperature"], abs=1e-6)
    # what a user gets: the label by the served rule, and the rule itself, in every row (network and ensemble)
    for name in ("raw_resnet-random_crop", ensemble):
        section = json.loads((task / "metrics" / name / "eval.json").read_text())["calibration"]
        predictions = pd.read_csv(task / "plots" / "confusion" / name / "val.csv")
        record = predictions["record"].iloc[0]
        run("ecgpipe", "predict", "--model", str(task / "predictors" / name), "--out", str(project / "p.csv"),
            str(project / "data" / "records" / f"{record}.mat"))
        got = pd.read_csv(project / "p.csv").iloc[0]
        rule = f"A when P(A) >= {section['decision']['threshold']:.4g}, else the most likely other class"
        assert got["decision"] == rule and got["label"] == predictions["predicted"].iloc[0], name
        assert got[[f"p_{c}" for c in FOUR]].tolist() == pytest.approx(
            predictions.iloc[0][[f"p_{c}" for c in FOUR]].tolist(), abs=2e-6), name
    results = pd.read_csv(task / "reports" / "results.csv")
    assert list(results["experiment"]) == ["mean_spectrum-chunked", "raw_resnet-random_crop", ensemble]
    assert results.set_index("experiment").loc[ensemble, "model"] == "rhythm_ensemble"
    assert results["record_challenge_score"].between(0, 1).all()
    # each model read as an AF alarm: AF found, and false alarms on each other class, with intervals
    for column in ("record_recall_A", "record_af_roc_auc",
                   *(f"record_af_specificity{at}_{c}" for at in ("", "_at_sensitivity_95") for c in "NO~")):
        assert results[column].between(0, 1).all() and (results[f"{column}_ci_low"] <= results[column]).all(), column
    # the gate of an AF detector reads these: AF found under the worst shift, AF's ranking under every shift
    assert results["worst_shift_recall_A_change"].between(-1, 1).all() and results["min_shift_af_roc_auc"].between(0, 1).all()
    assert results["threshold_A"].between(0, 1).all() and (results["record_ece_A_ci_low"] <= results["record_ece_A"]).all()
    markdown = (task / "reports" / "results.md").read_text()
    assert "## As an AF detector" in markdown and "record_challenge_score" in markdown
    champion = json.loads((task / "reports" / "champion.json").read_text())
    assert champion["registered_model"] == "synthetic-rhythm" and champion["alias"] == "champion"

    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert client.get_model_version_by_alias("synthetic-rhythm", "champion").run_id == champion["run_id"]
    runs = client.search_runs([client.get_experiment_by_name("synthetic-four").experiment_id])
    assert {r.info.run_name for r in runs} == {"mean_spectrum-chunked", "raw_resnet-random_crop", ensemble}
    for r in runs:
        assert 0 <= r.data.metrics["val_record_challenge_score"] <= 1
        assert "val_record_af_specificity_noise" in r.data.metrics and "val_record_af_roc_auc" in r.data.metrics

    # what the task serves beyond its own model (task_serve@four_class): @champion of report.serve_as, taken
    # by the task's champion when it passed the task's gate, kept by the workspace's otherwise
    from ecgpipe.pipeline.serve import run_serve

    workspace = project / "workspace-champion.json"
    workspace.write_text(json.dumps({"experiment": "conv-chunked", "model_uri": "models:/synthetic-af@champion"}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    served = run_serve("synthetic-af", task / "reports" / "champion.json", task / "models", workspace,
                       project / "served.json")
    assert served["experiment"] == champion["experiment"] and served["model"] == "models:/synthetic-af@champion"
    assert client.get_model_version_by_alias("synthetic-af", "champion").run_id == champion["run_id"]
    failed = project / "failed.json"
    failed.write_text(json.dumps({"experiment": None, "how": "no experiment passes the gate"}))
    kept = run_serve("synthetic-af", failed, task / "models", workspace, project / "kept.json")
    assert kept["experiment"] == "conv-chunked" and "did not pass its gate" in kept["why"]
    assert run_serve(None, task / "reports" / "champion.json", task / "models", workspace,
                     project / "none.json")["serves"] is None

    # one of the task's values changed: only the stages of that task that read it rerun (and check,
    # on any edit of params.yaml, and task_params, which writes the task's params file)
    assert yaml.safe_load((task / "params.yaml").read_text())["spectrogram"]["classes"] == FOUR
    small_params["tasks"]["four_class"]["set"]["report.order"] = ["raw_resnet-random_crop"]
    (project / "params.yaml").write_text(yaml.safe_dump(small_params, sort_keys=False))
    ran = re.findall(r"Running stage '([^']+)'", run(*dvc, "repro", "task_report@four_class"))
    assert set(ran) == {"check", "task_params@four_class", "task_report@four_class"}, ran


def test_a_task_never_registers_the_workspaces_model(small_params, tmp_path):
    """A task without a registered model of its own once moved the workspace's @champion."""
    small_params["tasks"] = {"t": {"set": {"mlflow.experiment_name": "x"}}}
    small_params["task_experiments"] = ["mean_spectrum-chunked"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params))
    with pytest.raises(ParamsError, match=r"tasks.t.set: expected report.registered_model, a registered model of the "
                                          r"task's own \(the workspace's 'ecgpipe-af' is not a task's to register\)"):
        task_params(path, "t")
    small_params["tasks"]["t"]["set"]["report.registered_model"] = "ecgpipe-af"  # named, but the same one
    path.write_text(yaml.safe_dump(small_params))
    with pytest.raises(ParamsError, match="is not a task's to register"):
        task_params(path, "t")
    small_params["tasks"]["t"]["set"]["report.registered_model"] = "ecgpipe-t"
    path.write_text(yaml.safe_dump(small_params))
    assert task_params(path, "t").report.registered_model == "ecgpipe-t"




def test_ensembles_are_the_tasks_to_make_and_each_names_a_task_network(small_params, tmp_path):
    from ecgpipe.pipeline.check import run_check

    small_params["tasks"] = {"t": {"set": {"report.registered_model": "ecgpipe-t"}}}
    small_params["task_experiments"] = ["mean_spectrum-chunked"]
    small_params["task_ensembles"] = {"fully_connected-random_chunk": {}}  # trained, but not by the tasks
    with pytest.raises(ParamsError, match=r"params: task_ensembles.fully_connected-random_chunk: expected a network "
                                          r"trained beside it \(one of task_experiments: mean_spectrum-chunked\)"):
        parse_params(small_params)
    small_params["task_ensembles"] = {"mean_spectrum-chunked": {"network_weight": 0.7}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params))
    task = task_params(path, "t")
    assert task.ensembles["mean_spectrum-chunked"].network_weight == 0.7
    assert task.experiment_names() == ["mean_spectrum-chunked", "mean_spectrum-chunked+rhythm"]
    small_params["ensembles"] = {"mean_spectrum-chunked": {}}  # the workspace's stages make none
    path.write_text(yaml.safe_dump(small_params))
    with pytest.raises(ParamsError, match=r"params: ensembles: expected none in this file: the tasks make"):
        run_check(load_params(path), path, tmp_path / "checked.json")
    assert not (tmp_path / "checked.json").exists()
    small_params["task_ensembles"] = {"mean_spectrum-chunked": {"network_weight": 1.5}}
    with pytest.raises(ParamsError, match=r"task_ensembles.mean_spectrum-chunked.network_weight: expected a weight "
                                          r"from 0 to 1, got 1.5"):
        parse_params(small_params)
    small_params["task_ensembles"] = {"mean_spectrum-chunked": {"combiner": "median"}}
    with pytest.raises(ParamsError, match=r"task_ensembles.mean_spectrum-chunked.combiner: expected one of mean, "
                                          r"logistic, got 'median'"):
        parse_params(small_params)
    # the learned combiner fits the two models' weights itself: a weight beside it would be ignored
    small_params["task_ensembles"] = {"mean_spectrum-chunked": {"combiner": "logistic", "network_weight": 0.7}}
    with pytest.raises(ParamsError, match=r"task_ensembles.mean_spectrum-chunked.network_weight: expected no "
                                          r"network_weight with combiner logistic .*, got 0.7"):
        parse_params(small_params)
    small_params["task_ensembles"] = {"mean_spectrum-chunked": {"combiner": "logistic"}}
    assert parse_params(small_params).task_ensembles["mean_spectrum-chunked"].combiner == "logistic"
