"""Accounts of the team's tracking server: MLflow's ``basic-auth`` app on ``ecgpipe server``.

A server that other machines can reach (any ``--host`` but loopback) always asks for a user name
and password; a loopback one does when started with ``--auth``. Three kinds of account:

- **readers** (every account): read every experiment, run and model (MLflow's default permission
  READ); they cannot log to the pipeline's experiments, register versions of its models or move
  their aliases. MLflow lets any signed-in user create experiments and models of their own.
- **writers** (the accounts that run the pipeline or ``ecgpipe promote``): the role
  ``ecgpipe-writer``, EDIT on every experiment and registered model.
- **the admin** (``admin``): manages accounts; its password is given once, from a file or the
  environment, never on the command line (where ``ps`` shows it to everyone).

Users sign in as MLflow's clients do: ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``.
The accounts live in their own PostgreSQL database beside the tracking data.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import secrets
import stat
import urllib.error
import urllib.request
from pathlib import Path

from ecgpipe.core.errors import TrackingStoreError

ADMIN = "admin"
ADMIN_PASSWORD_ENV = "ECGPIPE_SERVER_ADMIN_PASSWORD"
USER_PASSWORD_ENV = "ECGPIPE_SERVER_USER_PASSWORD"
ROLES = ("reader", "writer")
WRITER_ROLE = "ecgpipe-writer"
WRITER_GRANTS = (("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT"))
WORKSPACE = "default"  # MLflow keeps roles in workspaces; without workspaces, all is in "default"
AUTH_DATABASE = "mlflow_auth"
AUTH_CONFIG, SECRET_KEY_FILE = "basic_auth.ini", "flask-secret-key"
MIN_PASSWORD = 12  # MLflow's own minimum
AUTH_CACHE_S = 60


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume others can reach it


def read_password(file: Path | None, env: str, what: str) -> str | None:
    """A password from ``file`` (readable by its owner only, like ssh's keys) or the environment
    variable ``env``; None when neither is given. One line naming the file or variable otherwise."""
    if file is not None:
        try:
            mode = os.stat(file).st_mode
            if not stat.S_ISREG(mode):
                raise TrackingStoreError(f"{file}: not a file ({what} is read from a file of one line)")
            if mode & 0o077:
                raise TrackingStoreError(f"{file}: other users can read it (mode {mode & 0o777:o}); "
                                         f"`chmod 600 {file}` before it holds {what}")
            password = Path(file).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise TrackingStoreError(f"{file}: cannot read {what} ({exc.__class__.__name__}: {exc})") from None
        source = str(file)
    elif env in os.environ:
        password, source = os.environ[env], f"${env}"
    else:
        return None
    if len(password) < MIN_PASSWORD:
        raise TrackingStoreError(f"{source}: {what} must have at least {MIN_PASSWORD} characters "
                                 f"(it has {len(password)})")
    return password


def auth_environment(folder: Path, auth_database_uri: str, admin_password: str) -> dict[str, str]:
    """What ``mlflow server --app-name basic-auth`` needs in its environment: the configuration
    (written to ``folder``, without the password), the admin password, and a secret key kept
    across restarts (MLflow's CSRF tokens must stay valid across workers)."""
    config = folder / AUTH_CONFIG
    _write_private(config, "[mlflow]\ndefault_permission = READ\n"
                           f"database_uri = {auth_database_uri}\nadmin_username = {ADMIN}\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                           # a password check (werkzeug scrypt) costs 0.13 s of CPU here: without the cache, every
                           # logged metric pays it; a changed password reaches every worker within 60 s
                           f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n")
    key_file = folder / SECRET_KEY_FILE
    if not key_file.exists():
        _write_private(key_file, secrets.token_hex(32))
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": key_file.read_text().strip()}


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    path.chmod(0o600)


class _Admin:
    """MLflow's account API, called as the admin (the REST calls of mlflow.server.auth.client,
    with the credentials given here rather than read from the environment)."""

    def __init__(self, uri: str, password: str):
        self.uri = uri.rstrip("/")
        self.header = "Basic " + base64.b64encode(f"{ADMIN}:{password}".encode()).decode()

    def call(self, method: str, path: str, payload: dict | None = None, query: str = "") -> dict:
        request = urllib.request.Request(
            f"{self.uri}{path}{'?' + query if query else ''}", method=method,
            data=None if payload is None else json.dumps(payload).encode(),
            headers={"Authorization": self.header, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise TrackingStoreError(f"{self.uri}: the admin password is not the one this server's accounts "
                                         f"were made with (from ${ADMIN_PASSWORD_ENV} or --admin-password-file)"
                                         ) from None
            try:
                message = json.loads(exc.read()).get("message", "")
            except (ValueError, OSError, AttributeError):
                message = ""
            raise TrackingStoreError(f"{self.uri}{path}: HTTP {exc.code} {message.splitlines()[0] if message else ''}"
                                     .rstrip()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingStoreError(f"the MLflow tracking server {self.uri} is unreachable "
                                     f"({getattr(exc, 'reason', exc)})") from None
        return json.loads(body) if body else {}

    def writer_role_id(self) -> int:
        """The id of the writers' role, made with its grants when the server has none yet."""
        roles = self.call("GET", "/api/3.0/mlflow/roles/list", query=f"workspace={WORKSPACE}")["roles"]
        found = next((role for role in roles if role["name"] == WRITER_ROLE), None)
        if found is None:
            found = self.call("POST", "/api/3.0/mlflow/roles/create", {
                "workspace": WORKSPACE, "name": WRITER_ROLE,
                "description": "runs the ecgpipe pipeline and ecgpipe promote: logs runs, registers "
                               "versions, moves aliases"})["role"]
            for resource_type, pattern, permission in WRITER_GRANTS:
                self.call("POST", "/api/3.0/mlflow/roles/permissions/add", {
                    "role_id": found["id"], "resource_type": resource_type, "resource_pattern": pattern,
                    "permission": permission})
        return int(found["id"])


def prepare_accounts(uri: str, admin_password: str) -> None:
    """Check the admin password against the running server and make the writers' role."""
    _Admin(uri, admin_password).writer_role_id()


def add_user(uri: str, admin_password: str, name: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise TrackingStoreError(f"--role {role}: expected one of {', '.join(ROLES)}")
    admin = _Admin(uri, admin_password)
    role_id = admin.writer_role_id()
    try:
        admin.call("POST", "/api/2.0/mlflow/users/create", {"username": name, "password": password})
    except TrackingStoreError as exc:
        if "already exists" in str(exc):
            raise TrackingStoreError(f"{name}: {uri} has an account of that name already") from None
        raise
    if role == "writer":
        admin.call("POST", "/api/3.0/mlflow/roles/assign", {"username": name, "role_id": role_id})


def remove_user(uri: str, admin_password: str, name: str) -> None:
    if name == ADMIN:
        raise TrackingStoreError(f"{name}: the admin account cannot be removed")
    _Admin(uri, admin_password).call("DELETE", "/api/2.0/mlflow/users/delete", {"username": name})
