"""Tasks: the four-class variant as one DVC experiment, from params.yaml's tasks section."""
import json
import sys

import pandas as pd
import pytest
import yaml

from ecgpipe.core.errors import ParamsError
from ecgpipe.params import TaskParams, load_params, parse_params
from ecgpipe.pipeline.task import task_command, task_params, task_raw_params
from tests.conftest import ROOT

FOUR = ["N", "A", "O", "~"]


def test_the_projects_four_class_task():
    params = task_params(ROOT / "params.yaml", "four_class")
    assert params.spectrogram.classes == FOUR
    # the plain networks and the robust ones, on the same recordings
    assert set(params.experiments) == {"torch_lstm-random_chunk", "raw_resnet-random_crop",
                                       "torch_lstm-robust_crop", "raw_resnet-robust_crop"}
    # every recording that the robust ResNet's stretched 9-s crop fits (all but 14 of CinC's 8,528)
    resnet = params.experiments["raw_resnet-robust_crop"]
    assert params.spectrogram.min_length == resnet.augment.input_samples(params.crop_span(resnet)) > 2714
    assert params.report.champion_metric == "record_challenge_score"
    assert params.report.gate  # the robust networks are gated on AF under the device shifts
    assert params.mlflow.experiment_name != load_params(ROOT / "params.yaml").mlflow.experiment_name


def test_task_command_sets_values_and_removes_the_other_experiments(small_params):
    small_params["tasks"] = {"four": {"experiments": ["mean_spectrum-chunked"],
                                      "set": {"spectrogram.classes": FOUR, "mlflow.experiment_name": "x-4"}}}
    command = task_command("four", parse_params(small_params), queue=True)
    assert command == ["dvc", "exp", "run", "--queue", "--name", "four",
                       "-S", 'spectrogram.classes=["N", "A", "O", "~"]', "-S", 'mlflow.experiment_name="x-4"',
                       "-S", "~experiments.fully_connected-random_chunk", "-S", "~tasks"]


def test_a_bad_task_is_refused_naming_the_key(small_params, tmp_path):
    small_params["tasks"] = {"t": {"experiments": ["mean_spectrum-chunked"], "set": {"spectrogram.clases": FOUR}}}
    with pytest.raises(ParamsError, match=r"params: tasks.t.set.spectrogram.clases: expected a key of params.yaml "
                                          r"\(spectrogram has \['batch_size', 'classes', .*\]\), got 'spectrogram.clases'"):
        parse_params(small_params)  # when any stage reads the file, not only when the task runs
    # a key of the schema that this params.yaml leaves out: the task's own check still names it
    with pytest.raises(ParamsError, match=r"spectrogram.clases: no such key in params.yaml"):
        task_raw_params(small_params, TaskParams(["mean_spectrum-chunked"], {"spectrogram.clases": FOUR}))
    small_params["tasks"]["t"]["set"] = {"spectrogram.classes": ["N", "X"]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params))
    with pytest.raises(ParamsError, match=r"task t: params: spectrogram.classes: expected labels from"):
        task_params(path, "t")
    small_params["tasks"]["t"] = {"experiments": ["nope"], "set": {}}
    path.write_text(yaml.safe_dump(small_params))
    with pytest.raises(ParamsError, match=r"tasks.t.experiments: expected experiments of this file .*got 'nope'"):
        parse_params(small_params)
    with pytest.raises(ParamsError, match=r"tasks.t.experiments: expected experiments of this file .*got 'nope'"):
        task_params(path, "t")


def test_four_class_task_through_dvc(committed_project, small_params):
    """`ecgpipe task run` on synthetic recordings: a DVC experiment with four classes end to end
    (per-class metrics, the challenge score, a 4x4 confusion matrix, MLflow, the report), while the
    workspace keeps the two-class task."""
    small_params["experiments"]["raw_resnet-random_crop"] = {
        "model": "raw_resnet", "loader": "random_crop", "crop_samples": 600, "epochs": 2, "lr": 0.003,
        "lr_schedule": "cosine"}
    small_params["tasks"] = {"four_class": {
        "experiments": ["mean_spectrum-chunked", "raw_resnet-random_crop"],
        "set": {"spectrogram.classes": FOUR, "mlflow.experiment_name": "synthetic-four",
                "report.champion_metric": "record_challenge_score", "report.registered_model": "synthetic-rhythm",
                "report.gate": {}}}}  # plain networks, as in params.yaml's four_class task
    project, run = committed_project(small_params)
    before = (project / "params.yaml").read_text()
    run("ecgpipe", "task", "run", "four_class")
    assert (project / "params.yaml").read_text() == before and not (project / "metrics").exists()

    run(sys.executable, "-m", "dvc", "exp", "apply", "four_class")
    assert yaml.safe_load((project / "params.yaml").read_text())["spectrogram"]["classes"] == FOUR
    for name in ("mean_spectrum-chunked", "raw_resnet-random_crop"):
        record = json.loads((project / "metrics" / name / "eval.json").read_text())["val"]["record"]
        assert set(record["f1"]) == set(FOUR) and set(record["ci"]["f1"]) == set(FOUR)
        assert record["challenge_score"] == pytest.approx(sum(record["f1"][c] for c in "NAO") / 3, abs=2e-6)
        confusion = pd.read_csv(project / "plots" / "confusion" / name / "val.csv")
        assert set(confusion.columns) >= {f"p_{c}" for c in FOUR}
    assert not (project / "metrics" / "fully_connected-random_chunk").exists()  # left out of the task
    results = pd.read_csv(project / "reports" / "results.csv")
    assert set(results["experiment"]) == {"mean_spectrum-chunked", "raw_resnet-random_crop"}
    assert results["record_challenge_score"].between(0, 1).all()
    assert "record_challenge_score" in (project / "reports" / "results.md").read_text()
    # each model read as an AF alarm: AF found, and false alarms on each other class, with intervals
    for column in ("record_recall_A", "record_af_roc_auc",
                   *(f"record_af_specificity{at}_{c}" for at in ("", "_at_sensitivity_95") for c in "NO~")):
        assert results[column].between(0, 1).all() and (results[f"{column}_ci_low"] <= results[column]).all(), column
    for _, row in results.iterrows():  # AF found is the recall of A
        record = json.loads((project / "metrics" / row["experiment"] / "eval.json").read_text())["val"]["record"]
        assert row["record_recall_A"] == pytest.approx(record["recall"]["A"], abs=1e-6)
    assert "## As an AF detector" in (project / "reports" / "results.md").read_text()
    champion = json.loads((project / "reports" / "champion.json").read_text())
    assert champion["registered_model"] == "synthetic-rhythm"

    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    # a DVC experiment registers a candidate, never @champion (only the workspace's dvc repro does)
    assert champion["alias"] == "candidate-four_class"
    assert champion["model_uri"] == "models:/synthetic-rhythm@candidate-four_class"
    assert client.get_model_version_by_alias("synthetic-rhythm", "candidate-four_class").run_id == champion["run_id"]
    assert "champion" not in client.get_registered_model("synthetic-rhythm").aliases
    # so does a workspace `dvc exp run` (here only the report reruns: a tie-break param changed)
    run(sys.executable, "-m", "dvc", "exp", "run", "--name", "reordered", "-S", 'report.order=["raw_resnet-random_crop"]')
    assert set(client.get_registered_model("synthetic-rhythm").aliases) == {"candidate-four_class", "candidate-reordered"}
    experiment = client.get_experiment_by_name("synthetic-four")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_name for r in runs} == {"mean_spectrum-chunked", "raw_resnet-random_crop"}
    for r in runs:
        assert 0 <= r.data.metrics["val_record_challenge_score"] <= 1
        assert "val_record_f1_noise" in r.data.metrics and "val_record_f1_O" in r.data.metrics
        assert "val_record_af_specificity_noise" in r.data.metrics and "val_record_af_roc_auc" in r.data.metrics


def test_a_task_never_registers_the_workspaces_model(small_params, tmp_path):
    """A task without a registered model of its own once moved the workspace's @champion."""
    small_params["tasks"] = {"t": {"experiments": ["mean_spectrum-chunked"], "set": {"mlflow.experiment_name": "x"}}}
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


def test_a_mapping_in_a_task_replaces_the_one_in_params_yaml(small_params, tmp_path):
    """Hydra merges `-S key={...}` into the mapping there (`report.gate={}` changed nothing): the
    command removes it first, so DVC's params.yaml holds exactly the task's mapping."""
    from dvc.utils.hydra import apply_overrides

    small_params["report"]["gate"] = {"min_shift_roc_auc": {"at_least": 0.98},
                                      "worst_shift_f1_A_change": {"at_least": -0.03}}
    for gate in ({}, {"record_f1_A": {"at_least": 0.5}}):
        small_params["tasks"] = {"t": {"experiments": ["mean_spectrum-chunked"], "set": {"report.gate": gate}}}
        command = task_command("t", parse_params(small_params))
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(small_params))
        apply_overrides(str(path), [command[i + 1] for i, arg in enumerate(command) if arg == "-S"])
        assert yaml.safe_load(path.read_text())["report"]["gate"] == gate
