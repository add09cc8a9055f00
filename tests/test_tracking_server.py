"""`ecgpipe server start`: a real PostgreSQL cluster and `mlflow server` with served artifacts, on
free local ports. A train and an evaluate stage log to it, the registry and `ecgpipe predict`
work through it, a restart keeps every run, and `stop` leaves nothing running.

Slow (two server starts, a training): `.ci/run` runs it with the other slow tests."""
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ecgpipe.cli import main as cli_main
from ecgpipe.core.errors import TrackingStoreError
from ecgpipe.tracking.server import STATE_FILE

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    """Running: a zombie (exited, not yet collected by its parent, here PID 1 for the daemonised
    PostgreSQL) is not."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def _postmaster_pid(folder) -> int:
    return int((folder / "pgdata" / "postmaster.pid").read_text().split()[0])


def _leave_nothing_running(folder, pids, base) -> None:
    """Stop the folder's server, kill what survived of ``pids``, remove ``base``."""
    if (folder / STATE_FILE).exists():
        cli_main(["server", "stop", "--folder", str(folder)])
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def test_stages_registry_and_predict_through_a_postgresql_tracking_server(prepared, records_dir, tmp_path, capsys,
                                                                           monkeypatch):
    from mlflow.tracking import MlflowClient

    from ecgpipe.inference.predictor import predict_files
    from ecgpipe.tracking.registry import load_predictor, register_choice
    from tests.conftest import train_and_evaluate

    # as root, PostgreSQL runs as the user postgres, which cannot pass pytest's own (mode 700) folders
    base = Path(tempfile.mkdtemp(prefix="ecgpipe-server-"))
    base.chmod(0o755)
    folder = base / "server"
    cli_main(["server", "start", "--folder", str(folder)])
    printed = capsys.readouterr().out
    state = json.loads((folder / STATE_FILE).read_text())
    uri = state["tracking_uri"]
    assert f"export MLFLOW_TRACKING_URI={uri}" in printed and uri.startswith("http://127.0.0.1:")
    assert state["backend_store_uri"].startswith("postgresql+psycopg://")
    pids = [state["mlflow_pid"], _postmaster_pid(folder)]
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        name, out = "mean_spectrum-chunked", tmp_path / "out"
        train_and_evaluate(prepared["params"], name, prepared, records_dir, out)
        run_id = json.loads((out / "models" / name / "mlflow_run.json").read_text())["run_id"]
        run = MlflowClient(uri).get_run(run_id)
        assert run.info.status == "FINISHED" and "val_record_f1_A" in run.data.metrics
        # the artifacts are served: the client reads them through the server, not from a path
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert (folder / "artifacts").is_dir()
        register_choice(name, out / "models", "ecgpipe-server-test", "champion", "test")
        files = [str(records_dir / f"A0000{i}.mat") for i in (1, 2)]
        local = predict_files(load_predictor(str(out / "predictors" / name)), files)
        served = predict_files(load_predictor("models:/ecgpipe-server-test@champion"), files)
        np.testing.assert_allclose([r["p_A"] for r in served], [r["p_A"] for r in local], atol=1e-12)

        # a restart of both servers: the runs and the registry are still there
        cli_main(["server", "stop", "--folder", str(folder)])
        assert not any(_alive(pid) for pid in pids)
        cli_main(["server", "start", "--folder", str(folder)])
        state = json.loads((folder / STATE_FILE).read_text())
        pids = [state["mlflow_pid"], _postmaster_pid(folder)]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", state["tracking_uri"])
        assert MlflowClient(state["tracking_uri"]).get_run(run_id).info.status == "FINISHED"
        assert load_predictor("models:/ecgpipe-server-test@champion").class_names == ["N", "A"]
        with pytest.raises(TrackingStoreError, match="a server of this folder is running"):
            from ecgpipe.tracking.server import start_server
            start_server(folder)
        cli_main(["server", "stop", "--folder", str(folder)])
        left_running = [pid for pid in pids if _alive(pid)]
        assert left_running == []
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["server", "stop", "--folder", str(folder)])
        assert "no server of this folder is running" in str(exit_info.value.code)
    finally:  # whatever failed above, nothing stays running
        _leave_nothing_running(folder, pids, base)


def test_a_run_logging_through_a_server_restart_loses_nothing():
    """The tracking server restarted mid-study: a run that logs while it is down carries on
    (MLflow's client retries), and the runs that had finished are still there."""
    import threading
    import time

    import mlflow
    from mlflow.tracking import MlflowClient

    from ecgpipe.tracking.server import start_server, stop_server

    base = Path(tempfile.mkdtemp(prefix="ecgpipe-restart-"))
    base.chmod(0o755)
    folder = base / "server"
    try:
        uri = start_server(folder)["tracking_uri"]
        port = int(uri.rsplit(":", 1)[1])
        client = MlflowClient(uri)
        experiment = client.create_experiment("restart")
        finished = client.create_run(experiment, run_name="finished-before")
        client.log_metric(finished.info.run_id, "x", 1.0)
        client.set_terminated(finished.info.run_id)
        restarted = threading.Event()

        def restart():
            time.sleep(3)
            stop_server(folder)
            start_server(folder, port=port)  # the same address: clients keep their URI
            restarted.set()

        threading.Thread(target=restart).start()
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(experiment_id=experiment, run_name="through-restart") as run:
            step = 0
            while not restarted.is_set() or step < 8:  # logging all along, down time included
                mlflow.log_metric("step", step, step=step)
                step += 1
                time.sleep(0.5)
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
        # every step there (a request retried after the server had stored it may appear twice)
        assert sorted({m.value for m in client.get_metric_history(run.info.run_id, "step")}) == list(range(step))
        assert client.get_run(finished.info.run_id).info.status == "FINISHED"
    finally:
        stop_server(folder, missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)


def test_accounts_readers_read_and_only_writers_move_the_champion(prepared, records_dir, tmp_path, capsys,
                                                                  monkeypatch):
    """A server with accounts (MLflow's basic-auth app): a writer trains, registers and promotes
    through it; a reader sees all of it but cannot move @champion (one line, the alias unchanged);
    a client that did not sign in is told how; a restart with another admin password is refused."""
    from mlflow.tracking import MlflowClient

    from ecgpipe.tracking.registry import register_choice
    from tests.conftest import cli_exit_message, train_and_evaluate

    base = Path(tempfile.mkdtemp(prefix="ecgpipe-accounts-"))
    base.chmod(0o755)
    folder = base / "server"
    admin_file = tmp_path / "admin-password"
    admin_file.write_text("the-admins-own-secret\n")
    admin_file.chmod(0o600)
    monkeypatch.delenv("ECGPIPE_SERVER_ADMIN_PASSWORD", raising=False)
    cli_main(["server", "start", "--auth", "--folder", str(folder), "--admin-password-file", str(admin_file)])
    assert "every client signs in" in capsys.readouterr().out
    state = json.loads((folder / STATE_FILE).read_text())
    uri = state["tracking_uri"]
    pids = [state["mlflow_pid"], _postmaster_pid(folder)]
    assert "the-admins-own-secret" not in (folder / "basic_auth.ini").read_text()
    assert (folder / "basic_auth.ini").stat().st_mode & 0o077 == 0
    try:
        for name, role in (("alice", "writer"), ("bob", "reader")):
            monkeypatch.setenv("ECGPIPE_SERVER_USER_PASSWORD", f"{name}-password-123")
            cli_main(["server", "user", "add", name, "--role", role, "--folder", str(folder),
                      "--admin-password-file", str(admin_file)])
        assert "added the account bob (reader)" in capsys.readouterr().out
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

        # anyone who did not sign in: one line, nothing done
        assert "asks for an account: export MLFLOW_TRACKING_USERNAME" in cli_exit_message(
            ["promote", "ecgpipe-accounts-test", "1", "--why", "x"])

        # the writer: trains (the run logs to the server), registers and promotes
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-123")
        name, out = "mean_spectrum-chunked", tmp_path / "out"
        train_and_evaluate(prepared["params"], name, prepared, records_dir, out)  # logs the predictor to the run
        for version in (1, 2):  # two versions, the second by the report stage's route
            register_choice(name, out / "models", "ecgpipe-accounts-test", f"candidate-{version}", "test")
        cli_main(["promote", "ecgpipe-accounts-test", "1", "--why", "the writer's choice"])
        client = MlflowClient(uri)
        assert client.get_model_version_by_alias("ecgpipe-accounts-test", "champion").version == "1"

        # the reader: reads everything, cannot move @champion (nor register)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "bob-password-123")
        run_id = json.loads((out / "models" / name / "mlflow_run.json").read_text())["run_id"]
        assert client.get_run(run_id).info.status == "FINISHED"
        message = cli_exit_message(["promote", "ecgpipe-accounts-test", "2", "--why", "the reader's choice"])
        assert message.startswith(f"error: the MLflow store {uri}: bob may not do this (")
        assert "need the writer role" in message
        with pytest.raises(Exception, match="403"):
            client.create_model_version("ecgpipe-accounts-test", f"runs:/{run_id}/predictor", run_id)
        assert client.get_model_version_by_alias("ecgpipe-accounts-test", "champion").version == "1"

        # a restart with another admin password: refused, nothing left running
        cli_main(["server", "stop", "--folder", str(folder)])
        monkeypatch.setenv("ECGPIPE_SERVER_ADMIN_PASSWORD", "not-the-admins-secret")
        assert "the admin password is not the one this server's accounts were made with" in cli_exit_message(
            ["server", "start", "--auth", "--folder", str(folder)])
        assert not (folder / STATE_FILE).exists()
        assert not any(_alive(pid) for pid in pids)
    finally:
        _leave_nothing_running(folder, pids, base)
