"""MLflow tracking: where runs go, what each run records, and its system metrics."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ecgpipe.core.device import cpu_name
from ecgpipe.core.errors import TrackingStoreError
from ecgpipe.core.io import file_digest

TRACKING_ENV = "MLFLOW_TRACKING_URI"


def record_predictions_artifact(split: str) -> str:
    """Where the evaluate stage logs a split's table of recordings in its run (record, actual, predicted,
    p_<class>); a study reads each fold's back from there."""
    return f"evaluation/{split}_record_predictions.json"


def project_root() -> Path:
    """The DVC project root: DVC sets DVC_ROOT for stage commands, also for queued experiments,
    whose commands run in a temporary copy; outside DVC, the current directory."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def default_tracking_uri() -> str:
    """The project's embedded SQLite store, as an absolute path."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI when set, else the project's SQLite store (an absolute path)."""
    return os.environ.get(TRACKING_ENV) or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store; None for other stores (a server, a folder)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


_OTHER_STORE = f"point {TRACKING_ENV} at another store"


def check_server_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """A TrackingStoreError naming ``uri`` when no server answers there (MLflow's client would retry
    for minutes first). Any HTTP answer, even an error status, is a server."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingStoreError(f"the MLflow tracking server {uri} is unreachable ({reason}); start it "
                                 "(`ecgpipe server start`) or export the right MLFLOW_TRACKING_URI") from None
    # /health answers without the database: ask for one experiment, so that a server whose database is
    # down is named now, not after MLflow's client has retried its 500s for minutes
    search = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1",
                                    headers=_credentials_header())
    try:
        urllib.request.urlopen(search, timeout=timeout_s * 4).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            who = os.environ.get("MLFLOW_TRACKING_USERNAME")
            raise TrackingStoreError(
                f"the MLflow tracking server {uri} asks for an account: "
                + (f"the password of {who} (MLFLOW_TRACKING_PASSWORD) is wrong" if who else
                   "export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the server's admin makes "
                   "accounts with `ecgpipe server user add`)")) from None
        if exc.code >= 500:
            try:
                message = json.loads(exc.read()).get("message", "")
            except (ValueError, OSError, AttributeError):
                message = ""
            first = next((line.strip() for line in message.splitlines() if line.strip()), f"HTTP {exc.code}")
            raise TrackingStoreError(f"the MLflow tracking server {uri} cannot use its database ({first[:300]}); "
                                     "is its PostgreSQL running? restart it: `ecgpipe server stop`, then "
                                     "`ecgpipe server start`") from None
    except (urllib.error.URLError, OSError):
        return  # answered /health: MLflow's own client says what is wrong with the rest


def _credentials_header() -> dict[str, str]:
    """HTTP basic auth from MLflow's own variables, as its client sends them."""
    import base64

    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not user or password is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def check_store_file(uri: str, write: bool = True) -> None:
    """A SQLite store that exists must be a readable database (and, to ``write``, writable); a
    TrackingStoreError in one line otherwise. Checked before a stage or command does any work, so
    that MLflow's and SQLAlchemy's tracebacks never reach the user. A server must answer (at once,
    not after MLflow's minutes of retries); what it says is caught as :func:`store_error_line` says.

    Called once by each entry point that uses a store (the train, evaluate and report stages,
    ``predict``, ``study``), before its work: ``quick_check`` reads the whole file."""
    path = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        check_server_reachable(uri)
    if path is None:
        return
    if path.exists():
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
                verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            raise TrackingStoreError(f"{path}: not a readable MLflow store ({exc}: corrupted or truncated?); restore it "
                                     f"from a backup, or {_OTHER_STORE}") from None
        if verdict != "ok":
            raise TrackingStoreError(f"{path}: the MLflow store is damaged ({verdict}); restore it from a backup, or "
                                     f"{_OTHER_STORE}")
        if tables and "experiments" not in tables:
            raise TrackingStoreError(f"{path}: a SQLite database, but not an MLflow store (no experiments table); "
                                     f"{_OTHER_STORE}")
    if not write:
        return
    folder = path.parent if path.exists() else next(p for p in path.resolve().parents if p.exists())
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TrackingStoreError(f"{path}: the MLflow store is read-only for this user (or on a read-only disk); "
                                 f"make it writable, or {_OTHER_STORE}")
    if not path.exists() and path.parent.is_dir():
        _copy_migrated_store(path)


# MLflow makes a new SQLite store by running each of its schema migrations (2-8 s); a copy of an empty
# store it migrated once, kept per MLflow version in the user's cache, is the same store in a tenth
# of the time. Every test, study fold and fresh clone makes new stores.
STORE_TEMPLATE_DIR_ENV = "ECGPIPE_CACHE_DIR"


def _copy_migrated_store(path: Path) -> None:
    import shutil
    import tempfile
    from importlib.metadata import version

    cache = Path(os.environ.get(STORE_TEMPLATE_DIR_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or
                                                                   Path.home() / ".cache") / "ecgpipe")
    template = cache / f"mlflow-{version('mlflow')}-empty-store.db"
    try:
        if not template.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                _migrate(Path(tmp) / "store.db")
                os.replace(Path(tmp) / "store.db", template)  # whole or not at all, for concurrent makers
    except OSError:
        return  # no cache (a read-only home): MLflow makes the store itself, slower
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(template, partial)
        # the Default experiment's artifacts beside this store, as experiment_id puts every other one
        with contextlib.closing(sqlite3.connect(partial)) as db, db:
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                       ((path.resolve().parent / "mlartifacts" / "0").as_uri(),))
        os.link(partial, path)  # never over a store another process made meanwhile (FileExistsError)
    except (OSError, sqlite3.Error):
        pass  # made by another process, or MLflow makes it itself
    finally:
        partial.unlink(missing_ok=True)


def _migrate(path: Path) -> None:
    """An empty MLflow store at ``path``, every migration run, its connections closed."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts"))
    store.engine.dispose()


def store_error_line(exc: BaseException, uri: str | None = None) -> str | None:
    """One line for an error MLflow or SQLAlchemy raised while using the store (a full disk, a
    store that broke during the run); None for any other error."""
    if not type(exc).__module__.startswith(("mlflow", "sqlalchemy", "sqlite3")):
        return None
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if "disk is full" in first or "disk I/O error" in first:
        first += "; free some space and run again"
    if "error code 403" in first:  # a signed-in account without the right (accounts.py)
        first = (f"{os.environ.get('MLFLOW_TRACKING_USERNAME', 'this account')} may not do this "
                 f"({first.split(' failed')[0]}): it can read only; the accounts that run the pipeline or "
                 "promote need the writer role (`ecgpipe server user add NAME --role writer`)")
    return f"the MLflow store {uri or tracking_uri()}: {first}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their string form."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_tags(device: torch.device) -> dict[str, str]:
    """What MLflow does not tag by itself (it tags mlflow.source.git.commit, branch and the script)."""
    tags = {"torch_version": torch.__version__, "device": str(device), "cpu": cpu_name()}
    if device.type == "cuda":
        tags["gpu_name"] = torch.cuda.get_device_name(device)
    if stage := os.environ.get("DVC_STAGE"):
        tags["dvc_stage"] = stage
    if experiment := os.environ.get("DVC_EXP_NAME"):  # a `dvc exp run` experiment, queued ones included
        tags["dvc_experiment"] = experiment
    return tags


# The MLflow UI opens an experiment of this kind on its runs table (not on the GenAI traces page).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


STUDY_TAG, FOLD_TAG, SEED_TAG = "study", "fold", "seed"  # a study's runs: written here, read by its report


def study_tags(study: str | None, fold: int | None, seed: int) -> dict[str, str]:
    """The MLflow tags of a run of study ``study`` (its name, fold and seed), which the study's report
    reads; none outside a study."""
    return {} if study is None else {STUDY_TAG: study, FOLD_TAG: str(fold), SEED_TAG: str(seed)}


def experiment_id(mlflow, name: str) -> str:
    """The MLflow experiment ``name`` in the current store, created (with its artifact location and
    kind) if missing; creating it also creates a new store's tables."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise TrackingStoreError(f"the MLflow experiment {name!r} in {tracking_uri()} is deleted; restore it with "
                                 f"`mlflow experiments restore --experiment-id {experiment.experiment_id}`, or choose "
                                 "another mlflow.experiment_name")
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    kwargs = {}
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        # beside the SQLite store, not in ./mlruns of wherever the first run happened to start
        # (for the default store: under the project root, whatever the working directory)
        kwargs["artifact_location"] = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}, **kwargs)


@contextlib.contextmanager
def start_run(experiment_name: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
              system_metrics: bool = True) -> Iterator[Any]:
    """An MLflow run with params and tags; it ends FAILED if the block raises, else FINISHED."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = experiment_id(mlflow, experiment_name)
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(5)
    with mlflow.start_run(experiment_id=experiment, run_name=run_name, log_system_metrics=system_metrics) as run:
        mlflow.log_params(flatten(params))
        mlflow.set_tags(dict(tags))
        try:
            yield run
        except KeyboardInterrupt:  # Ctrl-C is the user's choice, not a failure: KILLED, as MLflow's UI says
            mlflow.end_run("KILLED")
            KILLED_RUNS.append(run.info.run_id)
            raise


# runs this process ended as KILLED on Ctrl-C: the stage's one line says so
KILLED_RUNS: list[str] = []


@contextlib.contextmanager
def resumed_run(run_info: Mapping[str, str]) -> Iterator[Any]:
    """Log more into a finished training run (``mlflow_run.json``'s run); afterwards it gets back
    its training end time and status, which resuming it would otherwise move to now."""
    import mlflow

    mlflow.set_tracking_uri(run_info["tracking_uri"])
    client = mlflow.tracking.MlflowClient()
    trained = client.get_run(run_info["run_id"]).info
    with mlflow.start_run(run_id=run_info["run_id"]) as run:
        yield run
    client.set_terminated(run_info["run_id"], status=trained.status, end_time=trained.end_time)


def _as_named(path: Path) -> str:
    """A data file's name for MLflow: its path in the repository the stage runs in (DVC runs stages
    there, a queued experiment's temporary copy included), else its absolute path."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


LOG_INPUT_TRIES = 3
# the lost race as each store words it: SQLite's, and PostgreSQL's (through a tracking server too)
DUPLICATE_ROW_ERRORS = ("UNIQUE constraint failed", "duplicate key value violates unique constraint")


def _log_input(dataset, context: str) -> None:
    """``mlflow.log_input``, retried when another process created the same dataset row meanwhile.

    MLflow's SQL store looks a dataset up and inserts it if missing, not atomically: two queue
    workers logging the same file (same name and digest) at once can both insert, and the second
    fails on the UNIQUE constraint (on PostgreSQL too: a Ray study's two first cells once lost a
    training to it). Retried, it finds the row the first made and links it.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(1, LOG_INPUT_TRIES + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as exc:
            if not any(error in str(exc) for error in DUPLICATE_ROW_ERRORS) or attempt == LOG_INPUT_TRIES:
                raise


def log_lineage(inputs: list[Path], params_file: Path | None, context: str = "training") -> dict[str, str]:
    """Record in the active run which data it read, as MLflow datasets (name: the path in the
    project, digest: the file's DVC md5, source: the file), plus the params file's md5.

    Returns the path -> md5 mapping, which is also logged as ``dvc/inputs.json``.
    """
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    digests = {}
    for path in inputs:
        name, md5 = _as_named(path), file_digest(path)
        digests[name] = md5
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local file source
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(Path(path).resolve().as_uri())
        _log_input(MetaDataset(source=source, name=name, digest=md5), context)
    if params_file is not None and Path(params_file).is_file():
        mlflow.set_tag("params_md5", file_digest(params_file))
    mlflow.log_dict(digests, "dvc/inputs.json")
    return digests


def log_dvc_lock_entry(stage: str, lock_path: Path) -> bool:
    """Log ``stage``'s entry of ``dvc.lock`` (its deps, params and outs with their md5s) to the
    active run as ``dvc/<stage>.lock.json``; False when the lock file or the entry is absent."""
    import mlflow
    import yaml

    if not Path(lock_path).is_file():
        return False
    entry = (yaml.safe_load(Path(lock_path).read_text()) or {}).get("stages", {}).get(stage)
    if entry is None:
        return False
    mlflow.log_dict(entry, f"dvc/{stage.replace('@', '_')}.lock.json")
    mlflow.set_tag("dvc_lock_md5", hashlib.md5(json.dumps(entry, sort_keys=True).encode()).hexdigest())
    return True


RUN_FILE = "mlflow_run.json"

# the packages whose versions a logged model pins (torch by its version, not its CUDA or CPU build)
SERVED_PACKAGES = ("torch", "numpy", "scipy", "pandas", "mlflow", "wfdb")


def served_requirements() -> list[str]:
    """The served model's ``requirements.txt``: the versions it was trained with, pinned."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVED_PACKAGES]


def network_requirements() -> list[str]:
    """The requirements of a training run's ``mlflow.pytorch`` model (pickled with cloudpickle), given
    to ``log_model``: inferred, MLflow loads the model in a subprocess, 7-16 s a training."""
    from importlib.metadata import version

    return [*served_requirements(), f"cloudpickle=={version('cloudpickle')}"]
