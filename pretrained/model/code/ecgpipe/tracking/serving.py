"""The HTTP side of the serving contract, for ``mlflow models serve``: bounded requests, one content
type, and error replies of one line without stack traces or server paths.

MLflow's scoring server reads a whole request body into memory, parses it, and answers a parsing
error with the Python stack trace; it has no setting for any of that. The served model installs
:class:`RequestContract` around it when it is loaded inside that server (``load_context`` runs
before the server builds its FastAPI app, which is then created with this middleware).
Everything else (``/ping``, ``/version``, the scoring itself) is MLflow's.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from http import HTTPStatus

import numpy as np

# Bytes of one /invocations request: about 4.5 million samples as JSON, a 4-hour recording at 300 Hz,
# which a server worker parses and scores within 1 GB (tests/test_serving.py measures it).
# ECGPIPE_MAX_REQUEST_BYTES sets another bound.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
MAX_REQUEST_ENV = "ECGPIPE_MAX_REQUEST_BYTES"
ACCEPTED = "application/json"
SERVER_MODEL_PATH_ENV = "__pyfunc_model_path__"  # set by `mlflow models serve` for its server process


MAX_CONCURRENT_ENV = "ECGPIPE_MAX_CONCURRENT_REQUESTS"


def max_concurrent_requests() -> int:
    """Requests one server worker scores at once (1 unless ECGPIPE_MAX_CONCURRENT_REQUESTS says more)."""
    value = os.environ.get(MAX_CONCURRENT_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def max_request_bytes() -> int:
    value = os.environ.get(MAX_REQUEST_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_REQUEST_BYTES


def one_line(message: str, limit: int = 300) -> str:
    """The first line of ``message``, at most ``limit`` characters: what a client needs, no traceback."""
    line = next((part.strip() for part in str(message).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": one_line(message)}).encode()


# A request's JSON nests 4 deep (dataframe_split, data, a row, a signal); Python's parser fails with a
# RecursionError near 1,000, which the server answered as a plain-text 500.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(body: bytes, block: int = 1 << 20) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped), without parsing it; a
    block at a time (whole, the running depth of a 32 MiB body took 660 MB)."""
    structure = _JSON_STRING.sub(b'""', body)
    deepest = depth = 0
    for start in range(0, len(structure), block):
        chunk = np.frombuffer(structure, dtype=np.uint8, count=min(block, len(structure) - start), offset=start)
        steps = (np.isin(chunk, (ord("["), ord("{"))).astype(np.int64)
                 - np.isin(chunk, (ord("]"), ord("}"))).astype(np.int64))
        running = np.cumsum(steps) + depth
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
    return deepest


TIMEOUT_MESSAGE = "the request took longer than the server's --timeout; send fewer or shorter recordings per request"

# The served model's predict (rows of signal and fs -> a DataFrame of predictions), set as it loads in
# `mlflow models serve`: /invocations is then answered here, with the body parsed once. MLflow's own
# handler parses it twice and keeps every sample as a Python float (32 bytes): a 32 MiB request took a
# worker 575 MB above its idle size, against about 200 MB here.
_SERVED = {"predict": None}


class RequestError(ValueError):
    """A request body that is not a dataframe_records or dataframe_split of rows with signal and fs."""


def request_rows(body: bytes):
    """The rows of a request as a DataFrame with columns signal (a float64 array, or the value as sent
    when it is not a list of numbers: that row gets its error from the model) and fs. Each row's list
    is turned into an array and let go as soon as it is read."""
    import pandas as pd

    try:
        request = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError(f"the request is not valid JSON ({exc})") from None
    formats = [key for key in ("dataframe_records", "dataframe_split") if isinstance(request, dict) and key in request]
    if len(formats) != 1:
        raise RequestError("expected a JSON object with one of dataframe_records or dataframe_split (rows with "
                           "columns signal and fs)")
    table = request.pop(formats[0])
    if formats[0] == "dataframe_split":
        if not (isinstance(table, dict) and isinstance(table.get("columns"), list) and isinstance(table.get("data"), list)
                and {"signal", "fs"} <= set(table["columns"])):
            raise RequestError("dataframe_split: expected columns (with signal and fs) and data")
        columns, table = table["columns"], table["data"]
        for i, row in enumerate(table):
            if not isinstance(row, list) or len(row) != len(columns):
                raise RequestError(f"dataframe_split: row {i} has not one value per column ({len(columns)})")
            table[i] = dict(zip(columns, row))
    if not isinstance(table, list):
        raise RequestError(f"{formats[0]}: expected a list of rows")
    signals, rates = [], []
    for i, row in enumerate(table):
        if not isinstance(row, dict) or "signal" not in row or "fs" not in row:
            raise RequestError(f"{formats[0]}: row {i} is not an object with signal and fs")
        signals.append(_samples(row["signal"]))
        rates.append(row["fs"])
        table[i] = None  # the row's Python list goes now, not after the whole request
    return pd.DataFrame({"signal": pd.Series(signals, dtype=object), "fs": pd.Series(rates, dtype=object)})


def _samples(value):
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return value


_CODES = {404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE",
          415: "UNSUPPORTED_MEDIA_TYPE", 500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE", 504: "TIMEOUT"}


class RequestContract:
    """ASGI middleware around the whole scoring app: POST /invocations must be ``application/json``
    (in any case, as media types are) of at most ``max_bytes`` (a larger one is refused with 413 as
    soon as its Content-Length or its first bytes over the bound say so, never read whole) and nest at
    most MAX_JSON_DEPTH deep; every error reply, on any path and from any layer (a timeout's 504, an
    exception's 500), becomes ``{"error_code", "message"}`` in one line; a path's trailing slash is
    ignored (no redirect with an empty body)."""

    def __init__(self, app, max_bytes: int | None = None, max_concurrent: int | None = None):
        self.app = app
        self.max_bytes = max_request_bytes() if max_bytes is None else max_bytes
        # requests scored at once by this worker; the others wait before their body is read, so that the
        # worker's memory is one request's, however many clients send at once
        self.slots = asyncio.Semaphore(max_concurrent_requests() if max_concurrent is None else max_concurrent)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] != "/" and scope["path"].endswith("/"):
            scope = {**scope, "path": scope["path"].rstrip("/") or "/",
                     "raw_path": scope.get("raw_path", b"").rstrip(b"/") or b"/"}
        if scope["path"] != "/invocations" or scope["method"] != "POST":
            return await self._guarded(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        mime = headers.get("content-type", "").split(";")[0].strip().lower()
        if mime != ACCEPTED:
            return await _reply(send, 415, "UNSUPPORTED_MEDIA_TYPE",
                                f"expected Content-Type {ACCEPTED} (a dataframe_split or dataframe_records body with "
                                f"columns signal and fs), got {mime or 'none'!r}")
        # MLflow compares the media type case-sensitively: hand it the canonical spelling
        scope = {**scope, "headers": [(k, ACCEPTED.encode()) if k.lower() == b"content-type" else (k, v)
                                      for k, v in scope["headers"]]}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await _reply(send, 413, "REQUEST_TOO_LARGE", self._too_large(int(length)))
        async with self.slots:
            await self._score(scope, receive, send)

    async def _score(self, scope, receive, send):
        body, more = bytearray(), True
        while more:  # read up to the bound; past it, refuse without reading the rest
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reply(send, 413, "REQUEST_TOO_LARGE", self._too_large(None))
        body = bytes(body)
        depth = json_depth(body)
        if depth > MAX_JSON_DEPTH:
            return await _reply(send, 400, "BAD_REQUEST", f"the request's JSON nests {depth} deep; expected at most "
                                f"{MAX_JSON_DEPTH} (a dataframe_split or dataframe_records body nests 4)")
        if _SERVED["predict"] is None:  # not our model (or a test's app): MLflow's handler
            return await self._guarded(scope, _replay(body), send)
        await self._predict(body, send)

    async def _predict(self, body: bytes, send) -> None:
        """Our model's /invocations: the body parsed once, in a thread (as MLflow's handler runs), within
        MLflow's --timeout; the reply is MLflow's JSON."""
        from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

        def parse_and_predict():
            rows = request_rows(body)
            return _SERVED["predict"](rows)
        try:
            predictions = await asyncio.wait_for(asyncio.to_thread(parse_and_predict),
                                                 timeout=MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())
        except RequestError as exc:
            return await _reply(send, 400, "BAD_REQUEST", str(exc))
        except (asyncio.TimeoutError, TimeoutError):
            return await _reply(send, 504, "TIMEOUT", TIMEOUT_MESSAGE)
        except Exception as exc:  # noqa: BLE001 - the server logs it; the client gets one JSON line
            return await _reply(send, 500, "INTERNAL_ERROR", f"the server failed on this request ({type(exc).__name__})")
        reply = json.dumps({"predictions": predictions.to_dict(orient="records")}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())]})
        await send({"type": "http.response.body", "body": reply})

    async def _guarded(self, scope, receive, send):
        """The app, its error replies rewritten, and an exception that escaped it answered as JSON."""
        started = {"yes": False}

        async def tracking_send(message):
            started["yes"] = started["yes"] or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, receive, _clean_errors(tracking_send))
        except Exception as exc:  # noqa: BLE001 - the server logs it; the client gets one JSON line
            if not started["yes"]:
                await _reply(send, 500, "INTERNAL_ERROR", f"the server failed on this request ({type(exc).__name__})")

    def _too_large(self, length: int | None) -> str:
        size = f"{length:,} bytes" if length is not None else "more"
        return (f"the request has {size}; expected at most {self.max_bytes:,} bytes (set {MAX_REQUEST_ENV} on the "
                "server for more, or send fewer recordings per request)")


async def _reply(send, status: int, code: str, message: str) -> None:
    body = _error_body(code, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


def _clean_errors(send):
    """``send`` that rewrites an error reply (status 400 and above) as one line without a trace."""
    state = {"status": 200, "start": None, "body": b""}

    async def wrapped(message):
        if message["type"] == "http.response.start":
            state["status"], state["start"] = message["status"], message
            if message["status"] < 400:
                await send(message)
            return
        if message["type"] != "http.response.body" or state["status"] < 400:
            return await send(message)
        state["body"] += message.get("body", b"")
        if message.get("more_body", False):
            return
        default = _CODES.get(state["status"], "BAD_REQUEST")
        try:
            reply = json.loads(state["body"])
            code, text = reply.get("error_code", default), reply.get("message", "") or reply.get("detail", "")
        except (ValueError, AttributeError):
            code, text = default, state["body"].decode("utf-8", "replace")
        if state["status"] == 504:
            text = TIMEOUT_MESSAGE
        await _reply(send, state["status"], code, _without_data(str(text) or HTTPStatus(state["status"]).phrase))
    return wrapped


def _without_data(message: str) -> str:
    """MLflow's messages may quote the whole request ("Failed to predict data '<DataFrame>'"); keep its
    own words only."""
    line = one_line(message, limit=10_000)
    if line.startswith("Failed to predict data"):
        return "the request does not fit the model's signature (columns signal: a list of numbers, fs: a number)"
    return one_line(line)


@contextlib.contextmanager
def refuse_to_serve(folder: str):
    """Inside ``mlflow models serve``, a model that cannot load (a ValueError: ModelFileError,
    PredictError) stops the server with one line instead of uvicorn's traceback; elsewhere the
    error goes to the caller as it is."""
    try:
        yield
    except ValueError as exc:
        if not os.environ.get(SERVER_MODEL_PATH_ENV):
            raise
        print(f"error: cannot serve {folder}: {one_line(str(exc), limit=1000)}", file=sys.stderr, flush=True)
        _stop_serving_parents()
        raise SystemExit(1) from None


def _stop_serving_parents() -> None:
    """SIGTERM to the processes above this one that serve it: uvicorn's supervisor (it would start the
    worker again) and the ``mlflow models serve`` command, which would print its own traceback for
    the exit status. Only processes whose command line says they are those are signalled."""
    import signal

    from ecgpipe.core.processes import command_line, parent_pid

    pid = os.getppid()
    while pid and pid > 1:
        command = command_line(pid) or ""
        serving = "mlflow.pyfunc.scoring_server" in command or (
            "mlflow" in command and " models " in f" {command} " and " serve" in command)
        if not serving:
            return
        parent = parent_pid(pid)
        os.kill(pid, signal.SIGTERM)
        pid = parent


def install_in_scoring_server(predict) -> None:
    """When running inside ``mlflow models serve``'s server process, make the FastAPI app it builds
    next carry :class:`RequestContract`, which answers /invocations with ``predict`` (a DataFrame of
    rows with signal and fs -> a DataFrame of predictions). Anywhere else (tests, ``ecgpipe predict``),
    nothing."""
    if not os.environ.get(SERVER_MODEL_PATH_ENV):
        return
    _SERVED["predict"] = predict
    import fastapi

    if getattr(fastapi.FastAPI, "_ecgpipe_contract", False):
        return
    base = fastapi.FastAPI

    class ContractApp(base):
        """FastAPI with the contract outside everything, MLflow's own middleware included."""
        _ecgpipe_contract = True

        async def __call__(self, scope, receive, send):
            contract = self.__dict__.get("_ecgpipe_outer")
            if contract is None:
                contract = self.__dict__["_ecgpipe_outer"] = RequestContract(super().__call__)
            await contract(scope, receive, send)

    fastapi.FastAPI = ContractApp
