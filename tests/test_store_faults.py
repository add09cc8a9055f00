"""A broken MLflow store (corrupted, truncated, read-only, full, a deleted experiment): one line
naming the store and what to do, from the stages, `predict` and `study report`; never a traceback,
and nothing of the stage's outputs lost."""
import sqlite3

import mlflow
import pytest

from ecgpipe.core.errors import TrackingStoreError
from ecgpipe.tracking.runs import check_store_file, store_error_line
from tests.conftest import cli_exit_message, empty_store, train

NAME = "mean_spectrum-chunked"


@pytest.fixture
def good_store(tmp_path):
    path = tmp_path / "mlflow.db"
    mlflow.MlflowClient(empty_store(path)).create_experiment("ecgpipe")
    return path


def _train(prepared, tmp_path):
    return train(prepared["params"], NAME, prepared, tmp_path)


def test_a_corrupted_store_is_one_line_everywhere(tmp_path, monkeypatch, prepared):
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"this is no database " * 500)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    expected = (f"error: {store}: not a readable MLflow store (file is not a database: corrupted or truncated?); "
                "restore it from a backup, or point MLFLOW_TRACKING_URI at another store")
    assert cli_exit_message(["predict", "--model", "models:/ecgpipe-af@champion", "x.mat"]) == expected
    assert cli_exit_message(["study", "report", "--name", "cv", "--out", str(tmp_path / "reports")]) == expected
    # a stage stops before its work, and the outputs it had stay as they were
    (tmp_path / "models" / NAME).mkdir(parents=True)
    (tmp_path / "models" / NAME / "model.pt").write_bytes(b"the previous model")
    with pytest.raises(TrackingStoreError, match="not a readable MLflow store"):
        _train(prepared, tmp_path)
    assert (tmp_path / "models" / NAME / "model.pt").read_bytes() == b"the previous model"


def test_a_truncated_store_is_named(good_store):
    data = good_store.read_bytes()
    good_store.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrackingStoreError, match=rf"^{good_store}: (not a readable MLflow store|the MLflow store is "
                                                 r"damaged)"):
        check_store_file(f"sqlite:///{good_store}")


def test_another_sqlite_database_is_not_a_store(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE patients (id INTEGER)")
    with pytest.raises(TrackingStoreError, match="a SQLite database, but not an MLflow store"):
        check_store_file(f"sqlite:///{path}", write=False)


def test_a_read_only_store_is_named_before_training(good_store, monkeypatch, prepared, tmp_path):
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK and str(p).startswith(str(tmp_path))
                        else real_access(p, mode))  # root writes anywhere: a read-only disk as os.access sees it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{good_store}")
    with pytest.raises(TrackingStoreError, match=rf"^{good_store}: the MLflow store is read-only for this user"):
        _train(prepared, tmp_path)
    check_store_file(f"sqlite:///{good_store}", write=False)  # reading it is fine


def test_a_deleted_experiment_says_how_to_restore_it(good_store, monkeypatch, prepared, tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{good_store}")
    experiment = client.get_experiment_by_name("ecgpipe")
    client.delete_experiment(experiment.experiment_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{good_store}")
    with pytest.raises(TrackingStoreError, match=rf"the MLflow experiment 'ecgpipe' in sqlite:///{good_store} is "
                                                 rf"deleted; restore it with `mlflow experiments restore "
                                                 rf"--experiment-id {experiment.experiment_id}`, or choose another "
                                                 r"mlflow.experiment_name"):
        _train(prepared, tmp_path)
    assert not (tmp_path / "models").exists()


def test_a_full_disk_during_logging_is_one_line(monkeypatch, tmp_path):
    import sqlalchemy.exc

    full = sqlalchemy.exc.OperationalError("INSERT INTO metrics", {}, sqlite3.OperationalError("database or disk is full"))
    line = store_error_line(full, "sqlite:///x.db")
    assert line.startswith("the MLflow store sqlite:///x.db: (sqlite3.OperationalError) database or disk is full")
    assert line.endswith("; free some space and run again") and "\n" not in line
    assert store_error_line(KeyError("a bug")) is None  # our own bugs keep their traceback

    def fail(args):
        raise full

    monkeypatch.setattr("ecgpipe.cli._study_report", fail)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    message = cli_exit_message(["study", "report", "--name", "cv"])
    assert message.startswith("error: the MLflow store sqlite:///x.db: (sqlite3.OperationalError) database or disk is full")


def test_a_new_store_is_a_copy_of_one_migrated_once_and_never_replaces_a_store(tmp_path, monkeypatch):
    """Issue 41: MLflow migrates every new SQLite store (2-8 s); a writer's first use now copies an empty
    store migrated once per MLflow version into the cache. The copy is a working store whose Default
    experiment keeps its artifacts beside it, and a store that exists is left as it is."""
    from ecgpipe.tracking.runs import _copy_migrated_store

    monkeypatch.setenv("ECGPIPE_CACHE_DIR", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    for store in (first, second):
        store.parent.mkdir()
        check_store_file(f"sqlite:///{store}")
        assert store.is_file()
    [template] = (tmp_path / "cache").iterdir()
    assert template.name == f"mlflow-{mlflow.__version__}-empty-store.db"
    client = mlflow.MlflowClient(f"sqlite:///{second}")
    assert client.get_experiment("0").artifact_location == (second.parent / "mlartifacts" / "0").as_uri()
    experiment = client.create_experiment("made-in-the-copy")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "x", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"x": 1.0}
    assert mlflow.MlflowClient(f"sqlite:///{first}").get_experiment_by_name("made-in-the-copy") is None
    before = second.read_bytes()
    _copy_migrated_store(second)  # another process made it meanwhile: not replaced
    assert second.read_bytes() == before
    assert sorted(p.name for p in second.parent.iterdir()) == ["mlflow.db"]  # no partial copy left
    check_store_file(f"sqlite:///{tmp_path / 'c' / 'mlflow.db'}", write=False)  # a reader makes nothing
    assert not (tmp_path / "c").exists()
