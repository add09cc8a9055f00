"""The serving contract over HTTP: a real `mlflow models serve` of a trained predictor on a free local
port. Replies are strict JSON (an error row has null probabilities), requests are bounded before
they are read whole, a wrong content type or body gets one line without a stack trace, the reply
names the run that trained the model, and the server survives all of it."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import scipy.io

from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.readers import read_recording
from ecgpipe.tracking.server import free_port
from ecgpipe.tracking.serving import MAX_REQUEST_BYTES


def _strict_json(data: bytes):
    """JSON as strict parsers read it: NaN or Infinity is an error, not a number."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(data, parse_constant=refuse)


def _process_tree(pid: int) -> list[int]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def peak_rss_bytes(pid: int) -> int:
    """The largest peak resident memory (VmHWM) of ``pid`` and its descendants."""
    peaks = []
    for member in _process_tree(pid):
        try:
            for line in open(f"/proc/{member}/status"):
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) * 1024)
        except OSError:
            continue
    return max(peaks, default=0)


@pytest.fixture(scope="module")
def server(evaluated, tmp_path_factory):
    folder = evaluated["out"] / "predictors" / evaluated["name"]
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    port = free_port()
    mlflow_cli = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [mlflow_cli, "models", "serve", "-m", str(folder), "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # mlflow starts uvicorn by name: this interpreter's scripts first, as in an activated venv
        env=dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                if response.status == 200:
                    break
        except (ConnectionError, urllib.error.URLError):
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the model server did not start within 90 s"
            time.sleep(1)
    try:
        yield {"url": url, "port": port, "pid": process.pid, "folder": folder, "log": log_path}
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        log.close()


def post(server, body: bytes, content_type: str = "application/json", timeout: float = 60) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one POST /invocations."""
    request = urllib.request.Request(f"{server['url']}/invocations", data=body, headers={"Content-Type": content_type})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), time.monotonic() - start
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.monotonic() - start


def read_reply(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP reply read from ``sock`` (its body by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def records(rows: list[dict]) -> bytes:
    return json.dumps({"dataframe_records": rows}).encode()


def assert_one_line_error(body: bytes, *without: str) -> str:
    reply = _strict_json(body)
    message = reply["message"]
    assert set(reply) == {"error_code", "message"}, reply  # no stack_trace
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message
    for text in ("site-packages", "/tmp", *without):
        assert text not in message, message
    return message


def test_the_served_model_answers_with_the_same_numbers_and_names_its_run(server, evaluated, records_dir):
    predictor = Predictor.from_folder(server["folder"])
    files = ["A00001", "A00002", "A00003"]
    expected = [predictor.classify(read_recording(records_dir / f"{f}.mat")) for f in files]
    signals = [scipy.io.loadmat(records_dir / f"{f}.mat")["val"][0].astype(float).tolist() for f in files]
    status, body, _ = post(server, records([{"signal": s, "fs": 300.0} for s in signals]))
    assert status == 200
    predictions = _strict_json(body)["predictions"]
    assert [p["label"] for p in predictions] == [e["label"] for e in expected]
    np.testing.assert_allclose([p["p_A"] for p in predictions], [e["p_A"] for e in expected], atol=1e-6)
    run_id = json.loads((evaluated["out"] / "models" / evaluated["name"] / "mlflow_run.json").read_text())["run_id"]
    assert {p["model"] for p in predictions} == {run_id} and all(p["error"] == "" for p in predictions)


def test_integer_samples_and_dataframe_split_are_answered_as_float_records_are(server, records_dir):
    """The server parses requests itself (once): CinC's integer samples, which MLflow's signature check
    refused ("Can not safely convert int64 to float64"), and the dataframe_split layout give the
    numbers of float dataframe_records."""
    samples = scipy.io.loadmat(records_dir / "A00002.mat")["val"][0]
    status, body, _ = post(server, records([{"signal": samples.astype(float).tolist(), "fs": 300.0}]))
    assert status == 200
    [as_floats] = _strict_json(body)["predictions"]
    split = json.dumps({"dataframe_split": {"columns": ["fs", "signal"], "data": [[300, samples.tolist()]]}})
    status, body, _ = post(server, split.encode())
    assert status == 200
    [as_ints] = _strict_json(body)["predictions"]
    assert as_ints["error"] == "" and as_ints["label"] == as_floats["label"]
    assert as_ints["p_A"] == pytest.approx(as_floats["p_A"], abs=1e-12)
    status, body, _ = post(server, json.dumps({"dataframe_split": {"columns": ["signal"], "data": [[[1.0]]]}}).encode())
    assert status == 400 and "expected columns (with signal and fs)" in assert_one_line_error(body)


def test_an_error_row_is_valid_json_with_nulls_and_the_batch_still_answers(server, records_dir):
    good = scipy.io.loadmat(records_dir / "A00001.mat")["val"][0].astype(float).tolist()
    status, body, _ = post(server, records([{"signal": [0.0] * 3000, "fs": 300.0}, {"signal": good, "fs": 300.0},
                                            {"signal": good[:100], "fs": 300.0}]))
    assert status == 200
    flat, fine, short = _strict_json(body)["predictions"]  # NaN would fail here: strict parsers refuse it
    for row in (flat, short):
        assert row["label"] == "" and row["p_A"] is None and row["p_N"] is None and row["error"]
    assert "flat" in flat["error"] and fine["error"] == "" and 0 <= fine["p_A"] <= 1


def test_sampling_rates_and_durations_outside_the_contract_are_refused_before_resampling(server):
    # 678 KB at fs 1 would be resampled x300 to 18 million samples: refused per row by the rate check,
    # which runs before any resampling (the message is that check's; no wall-clock bound, which a
    # loaded machine could trip)
    signal = np.round(np.random.default_rng(0).normal(0, 300, 60_000)).tolist()
    status, body, _ = post(server, records([{"signal": signal, "fs": 1.0}, {"signal": signal, "fs": 20_000.0}]))
    assert status == 200
    low, high = _strict_json(body)["predictions"]
    for row in (low, high):
        assert row["error"].startswith("sampling rate: expected a sampling rate in Hz from 50 to 10000")
        assert row["p_A"] is None


def test_an_oversized_request_is_refused_without_reading_it_and_memory_stays_bounded(server):
    # a Content-Length over the bound: 413 before the body is read. The client sends 1,000 of the 600 MB
    # it announced and waits: a server that read the body first would never answer (the socket times out)
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=120) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 600000000\r\n\r\n" + b"{" * 1000)
        head, body = read_reply(s)
    assert head.startswith(b"HTTP/1.1 413")
    assert f"expected at most {MAX_REQUEST_BYTES:,} bytes" in assert_one_line_error(body)
    # no Content-Length (chunked): refused once the bytes read pass the bound
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=30) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"1" * 1_000_000
        try:
            for _ in range(MAX_REQUEST_BYTES // len(chunk) + 2):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before we were done
        head, body = read_reply(s)
    assert head.startswith(b"HTTP/1.1 413") and "expected at most" in assert_one_line_error(body)
    assert peak_rss_bytes(server["pid"]) < 1024**3


def test_the_largest_legal_request_stays_within_the_readmes_memory_bound(server):
    """Issue 40, item 1: a 22 MiB request took the server tree to 1.2-1.7 GB. A request just under the
    32 MiB bound (a 4.2-hour recording at 300 Hz, whole thousandths of a mV as JSON floats) is
    answered, and every process of the server stays under the README's 1 GB (1.21 GB before the body
    was parsed once and its nesting measured a block at a time; 0.74 GB after, on a 2-core EPYC)."""
    t = np.arange(4_500_000)
    signal = np.round(np.sin(t / 300 * 2 * np.pi * 1.2) * 500)  # 0.5 mV, 72 beats a minute
    body = records([{"signal": signal.tolist(), "fs": 300}])
    assert MAX_REQUEST_BYTES - 2_000_000 < len(body) <= MAX_REQUEST_BYTES, len(body)
    status, reply, _ = post(server, body, timeout=300)
    assert status == 200, reply[:300]
    [row] = _strict_json(reply)["predictions"]
    assert row["error"] == "" and row["label"] in ("N", "A")
    assert peak_rss_bytes(server["pid"]) < 1024**3


def test_a_wrong_content_type_or_body_gets_one_line_and_the_server_survives(server, tmp_path):
    status, body, _ = post(server, records([{"signal": [1.0] * 3000, "fs": 300.0}]), content_type="text/csv")
    assert status == 415
    assert "expected Content-Type application/json" in assert_one_line_error(body)
    # CSV is not supported: a recording is a list of numbers, which a CSV cell cannot hold
    status, body, _ = post(server, b"signal,fs\n1,300\n", content_type="text/csv")
    assert status == 415 and "got 'text/csv'" in assert_one_line_error(body)
    for bad in (b"{not json", b'{"dataframe_records": [{"fs": 300}]}', b'{"dataframe_records": [{"signal": "x"}]}',
                b"[]"):
        status, body, _ = post(server, bad)
        assert 400 <= status < 500, (bad, status, body)
        assert_one_line_error(body, str(server["folder"]))
    with urllib.request.urlopen(f"{server['url']}/ping", timeout=5) as response:
        assert response.status == 200
    status, body, _ = post(server, records([{"signal": [0.0] * 3000, "fs": 300.0}]))
    assert status == 200 and _strict_json(body)["predictions"][0]["p_A"] is None


def test_the_real_server_takes_a_trailing_slash_any_case_of_json_and_refuses_deep_nesting(server):
    """Issue 40, item 9: a 307 with an empty body, a refusal that listed text/csv, a plain-text 500."""
    body = records([{"signal": [float(v) for v in np.sin(np.arange(3000) / 10) * 500], "fs": 300.0}])
    request = urllib.request.Request(f"{server['url']}/invocations/", data=body,
                                     headers={"Content-Type": "APPLICATION/JSON"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200 and _strict_json(response.read())["predictions"][0]["error"] == ""
    status, reply, _ = post(server, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nests 100000 deep" in assert_one_line_error(reply)
    try:
        urllib.request.urlopen(f"{server['url']}/no-such-endpoint", timeout=10)
    except urllib.error.HTTPError as error:
        assert error.code == 404 and assert_one_line_error(error.read()) == "Not Found"
    with urllib.request.urlopen(f"{server['url']}/ping", timeout=5) as response:
        assert response.status == 200


def test_a_model_that_cannot_load_stops_the_server_with_one_line(server, tmp_path):
    """Issue 40, item 10: an unknown featurizer in model.json printed uvicorn's traceback."""
    folder = tmp_path / "broken"
    shutil.copytree(server["folder"], folder)
    spec_path = folder / "artifacts" / "predictor" / "model.json"
    spec = json.loads(spec_path.read_text())
    spec["preprocessing"]["featurizer"]["kind"] = "wavelets"
    spec_path.write_text(json.dumps(spec))
    mlflow_cli = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    done = subprocess.run(
        [mlflow_cli, "models", "serve", "-m", str(folder), "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(free_port()), "--workers", "1"], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"error: cannot serve {spec_path.parent}: {spec_path}: written by another version of ecgpipe " \
           "(ValueError: unknown featurizer kind 'wavelets'" in output
    assert "Traceback" not in output, output[-3000:]
