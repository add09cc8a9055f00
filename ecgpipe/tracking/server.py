"""An MLflow tracking server for a team, in one command: a PostgreSQL backend store and served
artifacts (MLflow's "remote experiment tracking" set-up), bound to 127.0.0.1 unless told otherwise.
Off loopback it asks every client for an account (``accounts.py``).

Everything lives in one folder: ``pgdata/`` (the PostgreSQL cluster, made by ``initdb`` on first
start), ``artifacts/`` (served by the tracking server: clients never need its path), the logs, and
``server.json`` (ports and process ids, so that ``stop`` finds them). The embedded SQLite store
stays the default for one person; this is for several people or machines.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ecgpipe.core.errors import TrackingStoreError
from ecgpipe.core.processes import start_time
from ecgpipe.tracking import accounts

STATE_FILE = "server.json"
DATABASE, DB_USER = "mlflow", "ecgpipe"
PG_SERVICE_USER = "postgres"  # PostgreSQL refuses to run as root: as root, the cluster belongs to this user


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next((str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        raise TrackingStoreError(f"{name}: not found; install PostgreSQL (the Debian package postgresql-15) or point "
                                 "MLFLOW_TRACKING_URI at an existing server")
    return found


def _as_service_user(command: list[str]) -> list[str]:
    """``command`` as the PostgreSQL service user when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", PG_SERVICE_USER, "--", *command]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise TrackingStoreError(f"{what} failed: {last[-1] if last else f'exit status {result.returncode}'}")


def _check_reachable(folder: Path) -> None:
    """As root, PostgreSQL runs as the service user: every folder above ``folder`` must let it pass."""
    if os.geteuid() != 0:
        return
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise TrackingStoreError(f"{folder}: PostgreSQL runs as the user {PG_SERVICE_USER} here (we are root), and "
                                     f"{parent} does not let it pass (mode {parent.stat().st_mode & 0o777:o}); "
                                     "choose another --folder, or chmod o+x that folder")


def _init_cluster(pgdata: Path) -> None:
    pgdata.mkdir(parents=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_SERVICE_USER)
        os.chown(pgdata, user.pw_uid, user.pw_gid)
    pgdata.chmod(0o700)
    _run(_as_service_user([_pg_bin("initdb"), "-D", str(pgdata), "-U", DB_USER, "-A", "trust", "-E", "UTF8"]),
         f"initdb {pgdata}")


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise TrackingStoreError(f"the MLflow server exited at start ({tail[0] if tail else 'no output'}); "
                                     f"see {log}")
        if time.monotonic() > deadline:
            raise TrackingStoreError(f"the MLflow server did not answer {url} within {seconds:.0f} s; see {log}")
        time.sleep(0.5)


def start_server(folder: Path, host: str = "127.0.0.1", port: int | None = None, workers: int = 2,
                 auth: bool = False, admin_password: str | None = None) -> dict:
    """Start PostgreSQL and the MLflow tracking server on the data in ``folder``; returns the state
    written to ``folder/server.json`` (with ``tracking_uri``). Off loopback, or with ``auth``, every
    client signs in (MLflow's basic-auth app; ``admin_password`` is required)."""
    folder = Path(folder).resolve()
    auth = auth or not accounts.is_loopback(host)
    if auth and not admin_password:
        why = "a server that other machines can reach" if not accounts.is_loopback(host) else "--auth"
        raise TrackingStoreError(f"--host {host}: {why} needs accounts; give the admin password in "
                                 "$ECGPIPE_SERVER_ADMIN_PASSWORD or --admin-password-file (never on the command line)")
    state_path = folder / STATE_FILE
    if state_path.exists():
        raise TrackingStoreError(f"{state_path}: a server of this folder is running (or was not stopped); "
                                 f"run `ecgpipe server stop --folder {folder}` first")
    folder.mkdir(parents=True, exist_ok=True)
    _check_reachable(folder)
    pgdata, socket_dir = folder / "pgdata", folder / "sockets"
    if not pgdata.exists():
        _init_cluster(pgdata)
    socket_dir.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_SERVICE_USER)
        os.chown(socket_dir, user.pw_uid, user.pw_gid)
    pg_port = free_port()
    pg_log = folder / "postgres.log"
    pg_log.touch()
    if os.geteuid() == 0:
        os.chown(pg_log, pwd.getpwnam(PG_SERVICE_USER).pw_uid, -1)
    _run(_as_service_user([_pg_bin("pg_ctl"), "-D", str(pgdata), "-l", str(pg_log), "-w", "-o",
                           f"-p {pg_port} -k {socket_dir} -c listen_addresses=127.0.0.1", "start"]),
         "pg_ctl start")
    state = {"folder": str(folder), "pg_port": pg_port}
    try:
        for database in [DATABASE, *([accounts.AUTH_DATABASE] if auth else [])]:
            _create_database(pg_port, database)
        port = port or free_port(host)
        log = folder / "mlflow-server.log"
        backend = f"postgresql+psycopg://{DB_USER}@127.0.0.1:{pg_port}/{DATABASE}"
        mlflow_cli = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        command = [mlflow_cli, "server", "--backend-store-uri", backend, "--artifacts-destination",
                   str(folder / "artifacts"), "--host", host, "--port", str(port), "--workers", str(workers)]
        if auth:
            accounts_db = f"postgresql+psycopg://{DB_USER}@127.0.0.1:{pg_port}/{accounts.AUTH_DATABASE}"
            env.update(accounts.auth_environment(folder, accounts_db, admin_password))
            command += ["--app-name", "basic-auth"]
        process = subprocess.Popen(command, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                                   env=env)
        state.update(mlflow_pid=process.pid, mlflow_started=start_time(process.pid), host=host, port=port,
                     tracking_uri=f"http://{host}:{port}", backend_store_uri=backend, auth=auth)
        state_path.write_text(json.dumps(state, indent=2) + "\n")
        _wait_until_up(f"http://{host}:{port}/health", process, log, seconds=120)
        if auth:
            accounts.prepare_accounts(state["tracking_uri"], admin_password)
    except BaseException:
        stop_server(folder, missing_ok=True)
        raise
    return state


def _create_database(pg_port: int, database: str) -> None:
    created = subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", DB_USER, database],
                             capture_output=True, text=True, check=False)
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise TrackingStoreError(f"createdb {database} failed: {created.stderr.strip()}")


def read_state(folder: Path) -> dict:
    """``folder/server.json`` of a running server; one line when there is none."""
    state_path = Path(folder).resolve() / STATE_FILE
    if not state_path.exists():
        raise TrackingStoreError(f"{state_path}: no server of this folder is running")
    return json.loads(state_path.read_text())


def manage_account(folder: Path, action: str, name: str, role: str = "reader", password_file: Path | None = None,
                   admin_password_file: Path | None = None) -> str:
    """Add (``action`` "add") or remove an account of the running server of ``folder``; returns its URI.
    Passwords come from the files or from the environment (accounts.py), never from arguments."""
    state = read_state(folder)
    if not state.get("auth"):
        raise TrackingStoreError(f"{Path(folder).resolve()}: this server was started without accounts (loopback, "
                                 "no --auth): anyone on this machine may use it")
    admin_password = accounts.read_password(admin_password_file, accounts.ADMIN_PASSWORD_ENV, "the admin password")
    if admin_password is None:
        raise TrackingStoreError(f"the admin password: give it in ${accounts.ADMIN_PASSWORD_ENV} or "
                                 "--admin-password-file")
    if action == "remove":
        accounts.remove_user(state["tracking_uri"], admin_password, name)
        return state["tracking_uri"]
    password = accounts.read_password(password_file, accounts.USER_PASSWORD_ENV, f"the password of {name}")
    if password is None:
        raise TrackingStoreError(f"the password of {name}: give it in ${accounts.USER_PASSWORD_ENV} or --password-file")
    accounts.add_user(state["tracking_uri"], admin_password, name, password, role)
    return state["tracking_uri"]


@contextlib.contextmanager
def temporary_server(prefix: str = "ecgpipe-server-") -> Iterator[dict]:
    """A tracking server on loopback in a new temporary folder, stopped on leaving: for trying the
    scale-out on one machine (the Ray scenario's test, the backends benchmark). Yields its state."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)  # as root, PostgreSQL runs as the user postgres: its folder must be reachable by it
    folder = base / "server"
    state = start_server(folder)
    try:
        yield state
    finally:
        stop_server(folder, missing_ok=True)


def stop_server(folder: Path, missing_ok: bool = False) -> bool:
    """Stop the MLflow server and PostgreSQL of ``folder``; False when none was running."""
    folder = Path(folder).resolve()
    state_path = folder / STATE_FILE
    if not state_path.exists():
        if missing_ok:
            _stop_postgres(folder)
            return False
        raise TrackingStoreError(f"{state_path}: no server of this folder is running")
    state = json.loads(state_path.read_text())
    pid = state.get("mlflow_pid")
    if pid and "mlflow_started" in state and start_time(pid) != state["mlflow_started"]:
        # the server is gone and its pid may now be another program's: signal nothing
        print(f"{state_path}: the server it names (pid {pid}) is no longer running; nothing signalled",
              file=sys.stderr)
        pid = None
    if pid:
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                _reap(pid)
                os.killpg(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(pid)
    _stop_postgres(folder)
    state_path.unlink()
    return True


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status when it is our child (started in this process), so that it does
    not stay a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop_postgres(folder: Path) -> None:
    pgdata = folder / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        subprocess.run(_as_service_user([_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]),
                       capture_output=True, check=False)
