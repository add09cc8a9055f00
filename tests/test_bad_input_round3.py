"""Bad input and faults, round three (issue 40): each test failed on 8d94528. Grouped by area: files a
command writes, recordings that must be refused, parameters, model folders, the command line's
bounds, remotes, the tracking server, and the served model's HTTP contract."""
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import scipy.io

from ecgpipe.core.errors import ModelFileError, OutputError, ParamsError, PredictError, StudyError, TrackingStoreError
from ecgpipe.core.io import user_output, write_user_output
from ecgpipe.inference.readers import read_recording
from ecgpipe.params import parse_params
from tests.conftest import cli_exit_message

# --- files written: a FIFO, a private file, the model's own folder --------------------------------------


def test_a_fifo_without_a_reader_is_refused_at_once(tmp_path):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    target = user_output(fifo, "--out")
    start = time.monotonic()
    with pytest.raises(OutputError, match=r"out.csv: a FIFO with no reader; start its reader first"):
        write_user_output(target, "record,label\n")
    assert time.monotonic() - start < 60  # it hung forever before (the reader gets 2 s; 60: a loaded machine's margin)
    # with a reader, the text goes through the pipe
    got = {}
    reader = threading.Thread(target=lambda: got.update(text=open(fifo).read()))
    reader.start()
    deadline = time.monotonic() + 10
    while True:  # the reader opens the FIFO when its thread runs
        try:
            write_user_output(target, "record,label\n")
            break
        except OutputError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    reader.join(timeout=10)
    assert got["text"] == "record,label\n" and stat.S_ISFIFO(fifo.stat().st_mode)


def test_an_output_written_over_a_private_file_stays_private(tmp_path):
    out = tmp_path / "private.csv"
    out.write_text("old\n")
    out.chmod(0o600)
    write_user_output(user_output(out, "--out"), "new\n")
    assert out.read_text() == "new\n" and stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o400)  # read-only too: replaced (by rename, as before), and still read-only
    write_user_output(user_output(out, "--out"), "newer\n")
    assert out.read_text() == "newer\n" and stat.S_IMODE(out.stat().st_mode) == 0o400
    fresh = tmp_path / "fresh.csv"
    old_umask = os.umask(0o027)
    try:
        write_user_output(user_output(fresh, "--out"), "x\n")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640  # a new file follows the umask


def test_predictions_are_never_written_into_the_model_folder(evaluated, records_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(evaluated["out"] / "predictors" / evaluated["name"], model)
    before = {p: p.read_bytes() for p in model.rglob("*") if p.is_file()}
    for inside in (model / "MLmodel", model / "artifacts" / "predictor" / "model.pt", model / "new.csv"):
        message = cli_exit_message(["predict", "--model", str(model), "--out", str(inside),
                                    str(records_dir / "A00001.mat")])
        assert f"--out {inside}: is inside the model folder {model}" in message and "\n" not in message
    assert {p: p.read_bytes() for p in model.rglob("*") if p.is_file()} == before
    from ecgpipe.cli import main  # still loads, and a path outside it is fine

    main(["predict", "--model", str(model), "--out", str(tmp_path / "out.csv"), str(records_dir / "A00001.mat")])
    assert (tmp_path / "out.csv").read_text().startswith("record,label,")


# --- recordings that must be refused in their row ----------------------------------------------------------


def _wfdb_pair(tmp_path, name: str, record_line: str, signal_line: str):
    samples = (np.sin(np.arange(9000) / 10) * 500).astype("<i2")
    samples.tofile(tmp_path / f"{name}.dat")
    (tmp_path / f"{name}.hea").write_text(f"{record_line}\n{signal_line}\n")
    return tmp_path / f"{name}.hea"


def test_every_reader_refuses_what_no_ecg_is(evaluated, records_dir, tmp_path):
    from ecgpipe.inference.predictor import Predictor, predict_files

    good = scipy.io.loadmat(records_dir / "A00001.mat")["val"][0].astype(np.float64)
    spike = good.copy()
    spike[500] = 1e30  # within float32, so nothing overflowed: it was labelled
    np.save(tmp_path / "spike.npy", spike)
    scipy.io.savemat(tmp_path / "logical.mat", {"val": (good > 0)[None, :]})
    gain0 = _wfdb_pair(tmp_path, "gain0", "gain0 1 300 9000", "gain0.dat 16 0(0)/mV 16 0 0 0 0 I")
    rate_nan = _wfdb_pair(tmp_path, "ratenan", "ratenan 1 nan 9000", "ratenan.dat 16 1000(0)/mV 16 0 0 0 0 I")
    fine = _wfdb_pair(tmp_path, "fine", "fine 1 300 9000", "fine.dat 16 1000(0)/mV 16 0 0 0 0 I")
    with pytest.raises(PredictError, match=r"gain0.hea: the header's gain of lead I: expected a positive number"):
        read_recording(gain0)
    with pytest.raises(PredictError, match=r"ratenan.hea: the header's sampling rate: expected a sampling rate in Hz "
                                           r"from 50 to 10000, got 'nan'"):
        read_recording(rate_nan)
    assert read_recording(fine).fs == 300.0
    predictor = Predictor.from_folder(evaluated["out"] / "models" / evaluated["name"])
    files = [tmp_path / "spike.npy", tmp_path / "logical.mat", gain0, rate_nan, records_dir / "A00001.mat"]
    rows = predict_files(predictor, [str(f) for f in files], fs=None)
    errors = {r["record"]: r["error"] for r in rows}
    labels = {r["record"]: r["label"] for r in rows}
    assert errors["spike"].endswith("a .npy signal needs its sampling rate (--fs)")  # asked again with it below
    spike_row = predict_files(predictor, [str(tmp_path / "spike.npy")], fs=300)[0]
    assert spike_row["label"] == "" and "sample 500 is 1e+30 (in 1/1000 mV), beyond any ECG" in spike_row["error"]
    assert "logical.mat: expected real samples, got a MATLAB logical (true/false) array" in errors["logical"]
    assert "gain0.hea: the header's gain" in errors["gain0"] and "ratenan.hea: the header's sampling rate" in errors["ratenan"]
    assert all(labels[n] == "" for n in ("logical", "gain0", "ratenan"))
    assert errors["A00001"] == "" and labels["A00001"] in ("N", "A")


# --- parameters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (lambda p: p["report"].update(order=["mean_spectrum-chunked", "no-such"]),
     r"params: report.order: expected experiments of this file \(fully_connected-random_chunk, "
     r"mean_spectrum-chunked\), got 'no-such'"),
    (lambda p: p.update(tasks={"t": {"set": {"train.batchsize": 8}}}, task_experiments=["mean_spectrum-chunked"]),
     r"params: tasks.t.set.train.batchsize: expected a key of params.yaml \(train has \[.*'batch_size'.*\]\)"),
    (lambda p: p.update(tasks={"t": {"set": {"mlflow.experiment_name.x": 1}}}, task_experiments=["mean_spectrum-chunked"]),
     r"params: tasks.t.set.mlflow.experiment_name.x: expected a key of params.yaml \(mlflow.experiment_name is a "
     r"value, not a section\)"),
    (lambda p: p.update(tasks={"t": {"set": {}}}, task_experiments=["mean_spectrum-chunked", "gone"]),
     r"params: task_experiments: expected experiments of this file \(.*\), got 'gone'"),
    (lambda p: p["evaluate"].update(bootstrap_resamples=100_000_000),
     r"params: evaluate.bootstrap_resamples: expected 100 to 10,000 resamples \(each figure holds resamples x "
     r"validation recordings values in memory;.*got 100000000"),
])
def test_params_that_changed_nothing_or_grew_without_bound_are_refused(small_params, change, message):
    change(small_params)
    with pytest.raises(ParamsError, match=message):
        parse_params(small_params)


def test_a_tasks_params_drop_the_tasks_and_the_order_of_experiments_it_does_not_train(small_params, tmp_path):
    import yaml

    from ecgpipe.pipeline.task import task_params

    small_params["report"]["order"] = ["fully_connected-random_chunk", "mean_spectrum-chunked"]
    small_params["tasks"] = {"t": {"set": {"report.registered_model": "ecgpipe-t"}},
                             "u": {"set": {"report.registered_model": "ecgpipe-u"}}}
    small_params["task_experiments"] = ["mean_spectrum-chunked"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(small_params))
    run = task_params(path, "t")
    assert run.report.order == ["mean_spectrum-chunked"] and run.tasks == {} and run.task_experiments == []
    assert list(run.experiments) == ["mean_spectrum-chunked"]


# --- model folders ----------------------------------------------------------------------------------------


def test_a_model_json_whose_classes_do_not_fit_the_network_is_refused(evaluated, tmp_path):
    from ecgpipe.inference.predictor import Predictor

    model = tmp_path / "m"
    shutil.copytree(evaluated["out"] / "models" / evaluated["name"], model)
    spec = json.loads((model / "model.json").read_text())
    assert spec["n_outputs"] == 1
    spec["class_names"] = spec["preprocessing"]["class_names"] = ["N", "A", "O", "~"]
    (model / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelFileError, match=r"m/model.json: 4 classes but the network has 1 output \(expected 4\)"):
        Predictor.from_folder(model)


# --- the command line's bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["promote", "ecgpipe-af", "3", "--why", ""], "argument --why: expected some words, got an empty text"),
    (["promote", "ecgpipe-af", "3", "--why", "   "], "argument --why: expected some words"),
    (["promote", "ecgpipe-af", "3", "--why", "x" * 5001], "argument --why: expected at most 5,000 characters"),
    (["study", "run", "--name", "s" * 65], "argument --name: expected at most 64 characters"),
    (["study", "run", "--name", "cv", "--folds", "100000"], "argument --folds: expected at most 50 (each fold is a "
                                                            "whole training), got 100,000"),
    (["server", "start", "--port", "70000"], "argument --port: expected at most 65,535 (a TCP port)"),
])
def test_bounds_are_refused_at_once(argv, message, capsys):
    start = time.monotonic()
    with pytest.raises(SystemExit):
        from ecgpipe.cli import main

        main(argv)
    assert message in capsys.readouterr().err and time.monotonic() - start < 60  # minutes of work before


def test_a_features_table_that_is_a_users_file_is_refused_in_one_line_and_left_as_it_is(tmp_path):
    """The rhythm ensemble's stages read the features stage's table; another CSV in its place (REFERENCE.csv,
    a user's) is refused, naming it, and never written over."""
    from ecgpipe.core.errors import StoreError
    from ecgpipe.ensemble.rhythm import read_features

    reference = tmp_path / "REFERENCE.csv"
    reference.write_text("A00001,N\nA00002,A\n")
    user = tmp_path / "mine.csv"
    user.write_text("a,b\n1,2\n")
    for path in (reference, user):
        with pytest.raises(StoreError) as error:
            read_features(path, ["A00001"])
        assert f"{path}: not the features stage's table of 20 rhythm features" in str(error.value)
        assert "\n" not in str(error.value)
    assert reference.read_text() == "A00001,N\nA00002,A\n" and user.read_text() == "a,b\n1,2\n"


# --- remotes ---------------------------------------------------------------------------------------------


def test_remotes_that_would_write_into_the_project_or_are_not_remotes_are_refused(tmp_path, monkeypatch):
    from ecgpipe.pipeline.remotes import set_remotes

    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "plain").mkdir()
    outside = str(tmp_path / "remote")
    cases = [
        ((str(tmp_path / "a-file"), outside), r"--git .*a-file: is a file; expected a folder"),
        ((str(tmp_path / "plain"), outside), r"--git .*plain: a folder that is not a git repository"),
        ((str(project), outside), r"--git .*project: is the project"),
        ((str(tmp_path / "g.git"), str(tmp_path / "a-file")), r"--dvc .*a-file: is a file"),
        ((str(tmp_path / "g.git"), str(project)), r"--dvc .*project: is the project"),
        ((str(tmp_path / "g.git"), str(project / ".dvc" / "cache")), r"--dvc .*cache: is the project"),
        ((str(tmp_path / "g.git"), str(project / "models")), r"--dvc .*models: is the project"),
    ]
    for (git, dvc), message in cases:
        with pytest.raises(StudyError, match=message):
            set_remotes(git, dvc, project)
    assert not (tmp_path / "g.git").exists()  # checked before anything is made
    set_remotes(str(tmp_path / "g.git"), outside, project)  # outside the project: fine


# --- the tracking server ------------------------------------------------------------------------------------


def test_server_stop_never_signals_a_process_that_reused_the_servers_pid(tmp_path, capsys):
    from ecgpipe.core.processes import start_time
    from ecgpipe.tracking.server import STATE_FILE, stop_server

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        started = start_time(bystander.pid)
        # the state of a server that died: its pid now belongs to the bystander, who started later
        (tmp_path / STATE_FILE).write_text(json.dumps({"mlflow_pid": bystander.pid, "mlflow_started": started - 1}))
        assert stop_server(tmp_path)
        assert bystander.poll() is None  # alive: it was killed before
        assert f"the server it names (pid {bystander.pid}) is no longer running; nothing signalled" in \
            capsys.readouterr().err
        assert not (tmp_path / STATE_FILE).exists()
    finally:
        os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait()


@contextlib.contextmanager
def _fake_mlflow_server(reply):
    """A local HTTP server whose GETs ``reply(path, headers)`` answers with (status, body); yields its URI."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = reply(self.path, self.headers)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def _database_down(path, headers):
    """An MLflow server whose PostgreSQL was killed: /health is fine, everything else a 500."""
    return (200, b"OK") if path == "/health" else (500, json.dumps({
        "error_code": "INTERNAL_ERROR", "message": "(psycopg.OperationalError) connection failed: connection to "
        "server at \"127.0.0.1\", port 5999 failed: Connection refused\nIs the server running?"}).encode())


def test_a_server_whose_database_is_down_is_named_within_seconds():
    from ecgpipe.tracking.runs import check_store_file

    with _fake_mlflow_server(_database_down) as uri:
        start = time.monotonic()
        with pytest.raises(TrackingStoreError, match=r"the MLflow tracking server http://127.0.0.1:\d+ cannot use its "
                                                     r"database \(\(psycopg.OperationalError\) connection failed:.*\); "
                                                     r"is its PostgreSQL running\?"):
            check_store_file(uri)
        assert time.monotonic() - start < 30  # MLflow's client retried for 300 s


def test_a_server_that_other_machines_can_reach_is_not_started_without_accounts(tmp_path, monkeypatch):
    """Off loopback, every client must sign in: without the admin password nothing starts (and nothing
    is made); the password never comes from the command line, and a file others can read is refused."""
    monkeypatch.delenv("ECGPIPE_SERVER_ADMIN_PASSWORD", raising=False)
    folder = tmp_path / "server"
    for host in ("0.0.0.0", "192.168.1.20", "ecg-server.example"):
        message = cli_exit_message(["server", "start", "--host", host, "--folder", str(folder)])
        assert message == (f"error: --host {host}: a server that other machines can reach needs accounts; give the "
                           "admin password in $ECGPIPE_SERVER_ADMIN_PASSWORD or --admin-password-file (never on the "
                           "command line)")
    assert "--auth" in cli_exit_message(["server", "start", "--auth", "--folder", str(folder)])
    assert not folder.exists()
    secret = tmp_path / "admin-password"
    secret.write_text("a-long-enough-secret\n")
    secret.chmod(0o644)
    assert cli_exit_message(["server", "start", "--host", "0.0.0.0", "--folder", str(folder), "--admin-password-file",
                             str(secret)]) == (f"error: {secret}: other users can read it (mode 644); `chmod 600 "
                                               f"{secret}` before it holds the admin password")
    monkeypatch.setenv("ECGPIPE_SERVER_ADMIN_PASSWORD", "short")
    assert cli_exit_message(["server", "start", "--host", "0.0.0.0", "--folder", str(folder)]) == (
        "error: $ECGPIPE_SERVER_ADMIN_PASSWORD: the admin password must have at least 12 characters (it has 5)")
    assert not folder.exists()
    with pytest.raises(SystemExit):  # no such option: a password on the command line shows in `ps`
        from ecgpipe.cli import build_parser
        build_parser().parse_args(["server", "start", "--admin-password", "x" * 12])


def test_only_loopback_addresses_may_serve_without_accounts():
    from ecgpipe.tracking.accounts import is_loopback

    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "my-host", "127.0.0.1.example")] == [False] * 5


def test_a_client_without_an_account_is_told_which_variables_to_set(monkeypatch):
    """A server with accounts answers 401 to a client that did not sign in: one line naming MLflow's
    variables, not MLflow's retried request errors."""
    from ecgpipe.tracking.runs import check_store_file

    def accounts(path, headers):
        signed_in = headers.get("Authorization") == "Basic " + base64.b64encode(b"alice:alice-password-1").decode()
        return (200, b"{}") if path == "/health" or signed_in else (401, b"You are not authenticated.")

    with _fake_mlflow_server(accounts) as uri:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(TrackingStoreError, match=r"asks for an account: export MLFLOW_TRACKING_USERNAME and "
                                                     r"MLFLOW_TRACKING_PASSWORD"):
            check_store_file(uri)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-her-password")
        with pytest.raises(TrackingStoreError, match=r"the password of alice \(MLFLOW_TRACKING_PASSWORD\) is wrong"):
            check_store_file(uri)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-1")
        check_store_file(uri)  # signed in: the probe sends MLflow's credentials


# --- the served model's HTTP contract, on the middleware itself ------------------------------------------------


def _call(app, method: str, path: str, body: bytes = b"", content_type: str = "application/json"):
    """(status, headers, body) of one request through the contract around ``app``."""
    from ecgpipe.tracking.serving import RequestContract

    messages = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        messages.append(message)
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]}
    asyncio.run(RequestContract(app, max_bytes=1_000_000)(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in messages[1:])


def _app(reply: tuple[int, bytes] | Exception, seen: list):
    async def app(scope, receive, send):
        seen.append(scope)
        await receive()
        if isinstance(reply, Exception):
            raise reply
        await send({"type": "http.response.start", "status": reply[0], "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": reply[1]})
    return app


def _json_error(body: bytes) -> dict:
    reply = json.loads(body)
    assert set(reply) == {"error_code", "message"} and "\n" not in reply["message"]
    return reply


def test_every_reply_of_the_server_is_one_json_line_with_the_right_status():
    seen = []
    ok = _app((200, b'{"predictions": []}'), seen)
    # a trailing slash reaches the same endpoint (it was a 307 with an empty body)
    status, _, body = _call(ok, "POST", "/invocations/", b'{"dataframe_records": []}')
    assert status == 200 and seen[-1]["path"] == "/invocations"
    # media types are case-insensitive; MLflow then sees the canonical spelling
    status, _, _ = _call(ok, "POST", "/invocations", b'{"dataframe_records": []}', "APPLICATION/JSON")
    assert status == 200 and (b"content-type", b"application/json") in seen[-1]["headers"]
    # JSON nested 100,000 deep: refused before any parser recurses (it was a plain-text 500)
    status, _, body = _call(ok, "POST", "/invocations", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nests 100000 deep; expected at most 32" in _json_error(body)["message"]
    # brackets inside strings are no nesting
    status, _, _ = _call(ok, "POST", "/invocations", json.dumps({"x": "[" * 1000}).encode())
    assert status == 200
    # a timeout's plain 504 and an escaped exception's 500 become JSON
    status, headers, body = _call(_app((504, b"Request processing time exceeded limit"), []), "POST", "/invocations",
                                  b"{}")
    reply = _json_error(body)
    assert status == 504 and reply["error_code"] == "TIMEOUT" and "longer than the server's --timeout" in reply["message"]
    assert headers[b"content-type"] == b"application/json"
    status, _, body = _call(_app(RecursionError("deep"), []), "POST", "/invocations", b"{}")
    assert status == 500 and _json_error(body) == {"error_code": "INTERNAL_ERROR",
                                                   "message": "the server failed on this request (RecursionError)"}
    # any path: a 404 is JSON too
    status, _, body = _call(_app((404, b'{"detail":"Not Found"}'), []), "GET", "/nope")
    assert status == 404 and _json_error(body) == {"error_code": "ENDPOINT_NOT_FOUND", "message": "Not Found"}


# --- memory: one long recording is scored in bounded batches --------------------------------------------------


def test_scoring_a_long_recording_takes_memory_in_bounded_batches():
    """Issue 40, item 1: a 4.6-hour recording (the served model's largest request, 22 MiB of JSON) took the
    robust ResNet's scoring 476 MB above the process's peak (every crop in one forward pass); the README
    states the bound this asserts. The recording's own float64 arrays (40 MB each) stay."""
    from tests.conftest import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scoring_memory.py"), "--hours", "4.6"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["samples"] == 4_968_000 and measured["scoring_growth_mb"] < 250, measured


def test_ecgpipe_predict_streams_a_long_npy_file_in_bounded_memory(tmp_path):
    """Issue 40, item 1: `ecgpipe predict` of a 1 GB .npy (3.5 h at 10 kHz) peaked at 4.2 GB, 3,750 MB
    above the process before scoring. The file is now memory-mapped and read, checked and resampled
    a block at a time; what stays is the recording at 300 Hz (8.6 MB an hour). One hour here (a
    288 MB file): the README's bound for a day at 10 kHz is 400 MB, and an hour must stay far below it."""
    from tests.conftest import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scoring_memory.py"), "--hours", "1",
                           "--fs", "10000", "--npy", str(tmp_path / "long.npy")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["samples"] == 36_000_000 and (tmp_path / "long.npy").stat().st_size > 288e6
    assert measured["scoring_growth_mb"] < 200, measured  # the whole file as float64 alone is 288 MB


def test_the_streamed_resampler_gives_resample_polys_output_whatever_the_blocks():
    """Blocks of any size, rates up and down, lengths not a multiple of anything: the outputs of
    scipy's resample_poly on the whole signal (the same filter, the same zero padding)."""
    from fractions import Fraction

    import scipy.signal

    from ecgpipe.signal.resample import StreamResampler

    rng = np.random.default_rng(7)
    for fs, n, block in [(10_000, 200_003, 50_000), (250, 9_001, 1_000), (128, 5_000, 64), (50, 3_001, 10),
                         (360, 100_000, 100_000), (1_000, 12_345, 777)]:
        ratio = Fraction(300 / fs).limit_denominator(1000)
        x = rng.normal(size=n) * 500
        resampler = StreamResampler(ratio.numerator, ratio.denominator, n)
        streamed = np.concatenate([resampler.push(x[i: i + block]) for i in range(0, n, block)] + [resampler.finish()])
        whole = scipy.signal.resample_poly(x, ratio.numerator, ratio.denominator)
        assert streamed.shape == whole.shape, fs
        np.testing.assert_allclose(streamed, whole, rtol=1e-12, atol=1e-9 * np.abs(whole).max())


def test_the_checks_of_a_streamed_recording_name_what_the_whole_one_would(monkeypatch):
    """Read in blocks (here of 1,000 samples), a recording gets the same refusal as read whole: the
    peak's position counts from the recording's start, the flat value is its first sample."""
    import ecgpipe.inference.preprocessing as preprocessing_module
    from ecgpipe.inference.featurizers import RawCrops
    from ecgpipe.inference.preprocessing import Preprocessing
    from ecgpipe.inference.readers import Signal

    pre = Preprocessing(RawCrops(300.0, 2700), ("N", "A"))
    t = np.arange(30_000)
    ecg = np.sin(t / 300 * 2 * np.pi * 1.2) * 500
    spiked = ecg.copy()
    spiked[12_345] = 3e6
    cases = [(spiked, r"sample 12345 is 3e\+06"), (np.full(30_000, 7.0), "every sample is 7"),
             (ecg * 1e-3, "median absolute value is 0.351"), (np.where(t == 25_000, np.nan, ecg), "non-finite")]
    whole = []
    for samples, expected in cases:
        with pytest.raises(PredictError, match=expected) as refused:
            pre.samples_at_training_rate(Signal(samples, 300.0))
        whole.append(str(refused.value))
    monkeypatch.setattr(preprocessing_module, "BLOCK_SAMPLES", 1_000)
    for (samples, _), message in zip(cases, whole):
        with pytest.raises(PredictError) as refused:
            pre.samples_at_training_rate(Signal(samples, 300.0))
        assert str(refused.value) == message
    np.testing.assert_array_equal(pre.samples_at_training_rate(Signal(ecg, 300.0)), ecg)
