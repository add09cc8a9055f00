"""MLflow: a tiny training run into a temporary SQLite store, read back as a user would."""
import hashlib
import json

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from ecgpipe.core.io import read_json
from ecgpipe.inference.checkpoint import load_trained
from ecgpipe.tracking.runs import tracking_uri
from tests.conftest import train


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_STAGE", "train@mean_spectrum-chunked")
    return uri


def _train(prepared, tmp_path, name="mean_spectrum-chunked", params_file=None):
    return train(prepared["params"], name, prepared, tmp_path, params_file=params_file)


def test_tracking_uri_default_is_absolute_project_store(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_training_run_is_recorded(prepared, tmp_path, store):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("chunk: {size: 8}\n")
    summary = _train(prepared, tmp_path, params_file=params_file)
    run_info = read_json(tmp_path / "models" / "mean_spectrum-chunked" / "mlflow_run.json")
    assert run_info["tracking_uri"] == store
    client = MlflowClient(store)
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mean_spectrum-chunked"
    p = run.data.params
    assert p["model"] == "mean_spectrum" and p["loader"] == "chunked" and p["epochs"] == "3"
    assert p["lr"] == "0.01" and p["chunk.size"] == "8" and p["spectrogram.nperseg"] == "32"
    assert p["train.batch_size"] == "16" and p["split.seed"] == "12345"
    tags = run.data.tags
    # train.device auto: the GPU where there is one (the suite runs on CUDA hosts too)
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert tags["device"].startswith(expected_device) and tags["torch_version"] == torch.__version__
    from ecgpipe.core.device import cpu_name

    assert tags["cpu"] == cpu_name() and cpu_name() not in ("", "unknown")  # results differ between CPU models
    assert tags["dvc_stage"] == "train@mean_spectrum-chunked"
    for metric in ("train_loss", "train_accuracy", "val_chunk_balanced_accuracy", "val_chunk_accuracy",
                   "val_record_accuracy", "val_record_f1_A", "examples_per_s", "epoch_seconds"):
        points = client.get_metric_history(run.info.run_id, metric)
        assert [m.step for m in points] == [1, 2, 3], metric
    assert run.data.metrics["val_chunk_balanced_accuracy"] == pytest.approx(summary["val_chunk_balanced_accuracy"],
                                                                            abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_curves.png", "model.json"} <= artifacts
    # the logged model loads and gives the same outputs as the saved weights
    logged = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    saved, spec = load_trained(tmp_path / "models" / "mean_spectrum-chunked")
    x = torch.randn(3, spec["n_steps"], spec["n_inputs"])
    torch.testing.assert_close(logged(x), saved(x))
    assert spec["class_names"] == ["N", "A"] and spec["n_outputs"] == 1
    # the preprocessing object travels with the weights
    assert spec["preprocessing"]["featurizer"]["kind"] == "spectrogram_chunks"
    assert spec["preprocessing"]["featurizer"]["normalisation"]["mean"]

    # lineage: the files it read as MLflow datasets, digest = DVC's md5; the params file's md5
    inputs = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
    read = [prepared["chunks"] / "train.pt", prepared["chunks"] / "val.pt", prepared["spectrogram"] / "preprocessing.json",
            prepared["signals"]]  # the validation recordings
    assert set(inputs) == {str(p.resolve()) for p in read}  # outside the working directory: absolute paths
    for path in read:
        dataset = inputs[str(path.resolve())]
        assert dataset.digest == hashlib.md5(path.read_bytes()).hexdigest()
        assert json.loads(dataset.source)["uri"] == path.resolve().as_uri()
    assert tags["params_md5"] == hashlib.md5(params_file.read_bytes()).hexdigest()
    # the UI opens the experiment on its runs table
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    speed = read_json(tmp_path / "metrics" / "mean_spectrum-chunked" / "speed.json")
    assert speed["examples_per_s"] > 0 and speed["device"].startswith(expected_device) and "examples_per_s" not in summary


def test_default_store_keeps_artifacts_under_the_project_from_any_folder(prepared, tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(project))
    monkeypatch.chdir(elsewhere)
    from ecgpipe.tracking.runs import start_run

    try:
        for experiment in ("first", "second"):  # the second after mlflow has set $MLFLOW_TRACKING_URI itself
            with start_run(experiment, "run", {"a": 1}, {}, system_metrics=False) as run:
                mlflow.log_dict({"x": 1}, "x.json")
            location = MlflowClient(tracking_uri()).get_experiment(run.info.experiment_id).artifact_location
            assert location == (project / "mlartifacts").as_uri(), experiment
            assert len(list((project / "mlartifacts").rglob("x.json"))) == (1 if experiment == "first" else 2)
    finally:
        mlflow.set_tracking_uri(None)  # also unsets the variable it set
    assert list(elsewhere.iterdir()) == []


def test_failing_run_ends_failed_and_writes_nothing(prepared, tmp_path, store, monkeypatch):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr("ecgpipe.pipeline.train.fit", broken_fit)
    with pytest.raises(RuntimeError, match="out of memory"):
        _train(prepared, tmp_path)
    runs = MlflowClient(store).search_runs([mlflow.get_experiment_by_name("ecgpipe").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()
    assert not (tmp_path / "plots").exists()


def test_an_unreachable_tracking_server_is_one_line_within_seconds_and_writes_nothing(prepared, tmp_path,
                                                                                      monkeypatch):
    import time

    from ecgpipe.core.errors import TrackingStoreError
    from ecgpipe.tracking.server import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there: MLflow's client would retry for minutes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(TrackingStoreError) as error:
        _train(prepared, tmp_path)
    assert time.monotonic() - started < 120  # MLflow's client retries for about 250 s; ours asks once, in 5 s
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"the MLflow tracking server {uri} is unreachable")
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()


def test_random_chunk_experiment_trains(prepared, tmp_path, store):
    summary = _train(prepared, tmp_path, "fully_connected-random_chunk")
    assert summary["epochs"] == 2 and 0 <= summary["val_chunk_accuracy"] <= 1
    history = (tmp_path / "plots" / "history" / "fully_connected-random_chunk.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss,train_accuracy,val_chunk_balanced_loss,val_chunk_loss,"
                                 "val_chunk_balanced_accuracy,val_chunk_accuracy,val_record_accuracy") and len(history) == 3
    # this experiment's schedule is cosine over 2 epochs: 0.01, then 0.01 * (1 + cos(pi / 2)) / 2
    lr = pd.read_csv(tmp_path / "plots" / "history" / "fully_connected-random_chunk.csv")["lr"]
    assert lr.tolist() == pytest.approx([0.01, 0.005])


@pytest.mark.parametrize("lost_race", [
    "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest",
    # PostgreSQL through a tracking server, as a Ray study's cell once failed on it
    'BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"\n'
    "DETAIL:  Key (experiment_id, name, digest)=(1, data/spectrogram/preprocessing.json, 30fd5ad5) already exists.",
])
def test_lineage_survives_a_concurrent_insert_of_the_same_dataset(store, tmp_path, monkeypatch, lost_race):
    """Two queue workers logging the same file at once: MLflow's get-or-create of the dataset row is
    not atomic, and the loser hits the UNIQUE constraint. It retries and links the row."""
    from mlflow.exceptions import MlflowException

    from ecgpipe.tracking import runs as tracking

    data = tmp_path / "x.json"
    data.write_text("{}")
    real, calls = mlflow.log_input, []

    def racing(dataset, context=None):
        calls.append(dataset.name)
        if len(calls) == 1:
            raise MlflowException(lost_race)
        return real(dataset, context=context)

    monkeypatch.setattr(mlflow, "log_input", racing)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)  # an earlier test may have set another store for this process
    try:
        with mlflow.start_run() as run:
            tracking.log_lineage([data], None)
        assert len(calls) == 2
        inputs = MlflowClient(store).get_run(run.info.run_id).inputs.dataset_inputs
        assert [i.dataset.digest for i in inputs] == [hashlib.md5(b"{}").hexdigest()]
        monkeypatch.setattr(mlflow, "log_input", lambda *a, **k: (_ for _ in ()).throw(MlflowException("other")))
        with mlflow.start_run(), pytest.raises(MlflowException, match="other"):
            tracking.log_lineage([data], None)  # any other error is not retried
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_diverging_training_stops_with_one_line_and_writes_nothing(prepared, tmp_path, store):
    """lr: .inf was once accepted and "succeeded" with a NaN model recorded in dvc.lock; a finite but
    absurd rate still diverges, and must not leave a model behind."""
    import dataclasses

    from ecgpipe.core.errors import TrainingError

    params = prepared["params"]
    name = "mean_spectrum-chunked"
    absurd = dataclasses.replace(params.experiments[name], lr=1e30)
    diverging = dataclasses.replace(params, experiments={**params.experiments, name: absurd})
    with pytest.raises(TrainingError, match=rf"^experiment {name}: the training loss is (nan|inf) in epoch \d+ at learning rate "
                                            rf"1e\+30: training diverged; lower the learning rate \(experiments\.{name}\.lr "
                                            r"is 1e\+30\)$"):
        train(diverging, name, prepared, tmp_path)
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()
    (run,) = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("ecgpipe").experiment_id])
    assert run.info.status == "FAILED"
