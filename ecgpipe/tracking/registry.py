"""The MLflow Model Registry side: predictors loaded from ``runs:/`` and ``models:/`` URIs, and the
champion alias that the report stage moves."""
from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

from ecgpipe.core.errors import PredictError
from ecgpipe.core.io import read_json
from ecgpipe.inference.predictor import Predictor


def load_predictor(source: str) -> Predictor:
    """From a predictor or model folder, or from an MLflow ``runs:/...`` or ``models:/...`` URI of a predictor."""
    if source.startswith(("runs:/", "models:/")):
        return Predictor.from_folder(download_mlflow_model(source))
    return Predictor.from_folder(source)


def download_mlflow_model(uri: str) -> str:
    """The local folder of an MLflow ``runs:/`` or ``models:/`` URI, or a PredictError in one line.

    With the default store, a store file that does not exist is an error, not a new empty store.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from ecgpipe.tracking.runs import TRACKING_ENV, check_store_file, tracking_uri

    store = tracking_uri()
    if not os.environ.get(TRACKING_ENV) and _no_store_file(store):
        raise PredictError(f"{uri}: no MLflow store at {store}; set {TRACKING_ENV} to the store that holds the model")
    check_store_file(store, write=False)
    mlflow.set_tracking_uri(store)  # a models:/ URI resolves in the registry of the process's tracking URI
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=store)
    except MlflowException as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PredictError(f"{uri}: not found in the MLflow store {store} ({first_line})") from None


CHAMPION = "champion"
CANDIDATE_PREFIX = "candidate-"
EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` (workspace, --temp and --queue) for its stages


def registry_alias(study: str | None = None) -> str:
    """The alias the report gives its choice: ``champion`` for the workspace's ``dvc repro``, and
    ``candidate-<name>`` for a DVC experiment (tasks and studies are DVC experiments too) or a
    study, which must never move ``@champion`` (only ``ecgpipe promote`` does, on purpose)."""
    name = os.environ.get(EXPERIMENT_ENV) or study
    if not name:
        return CHAMPION
    return CANDIDATE_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "-", name)[:200]


def _client(tracking_uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ecgpipe.tracking.runs import check_store_file

    check_store_file(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri)


def _version_by_alias(client, registered_model: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(registered_model, alias)
    except MlflowException:
        return None


def tag_alias_move(client, registered_model: str, version: str, alias: str, by: str, why: str) -> None:
    """Who moved ``alias`` to ``version``, when and why, as tags of the version."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for key, value in {"by": by, "at": stamp, "why": why}.items():
        client.set_model_version_tag(registered_model, version, f"ecgpipe.{alias}.{key}", value[:4000])


def register_choice(experiment: str, models_dir: Path, registered_model: str, alias: str, why: str) -> dict:
    """Register ``experiment``'s predictor under ``registered_model`` and point ``alias`` at it (a new
    version unless one of the run's versions held ``alias`` before); the move is tagged on the version."""
    import mlflow

    from ecgpipe.tracking.pyfunc import ARTIFACT
    from ecgpipe.tracking.runs import RUN_FILE

    run = read_json(Path(models_dir) / experiment / RUN_FILE)
    client = _client(run["tracking_uri"])
    current = _version_by_alias(client, registered_model, alias)
    if current is not None and current.run_id == run["run_id"]:
        version = current.version
    else:
        # the run's version that held this alias before, where there is one (the workspace's report and a
        # task's serve stage hand @champion back and forth on every `dvc repro`), else a new version
        source = f"runs:/{run['run_id']}/{ARTIFACT}"
        known = [v for v in client.search_model_versions(f"name='{registered_model}'")
                 if v.run_id == run["run_id"] and f"ecgpipe.{alias}.by" in v.tags]
        version = (min(known, key=lambda v: int(v.version)).version if known
                   else mlflow.register_model(source, registered_model).version)
        client.set_registered_model_alias(registered_model, alias, version)
        tag_alias_move(client, registered_model, version, alias, "the report stage", why)
    return {"experiment": experiment, "run_id": run["run_id"], "registered_model": registered_model,
            "version": int(version), "alias": alias, "model_uri": f"models:/{registered_model}@{alias}"}


def _no_store_file(uri: str) -> bool:
    """A SQLite store whose file does not exist (opening it would create an empty store)."""
    from ecgpipe.tracking.runs import sqlite_path

    path = sqlite_path(uri)
    return path is not None and not path.is_file()


def current_version(tracking_uri: str, registered_model: str, alias: str = CHAMPION) -> dict | None:
    """The version ``alias`` points at (its number and run), or None (no store, model or alias)."""
    if _no_store_file(tracking_uri):
        return None
    version = _version_by_alias(_client(tracking_uri), registered_model, alias)
    return None if version is None else {"registered_model": registered_model, "version": int(version.version),
                                         "run_id": version.run_id, "model_uri": f"models:/{registered_model}@{alias}"}


def promote(registered_model: str, version: int, why: str, by: str) -> dict:
    """Move ``@champion`` of ``registered_model`` to ``version`` on purpose; the version is tagged
    with who, when and why. A TrackingStoreError when the model or version does not exist."""
    from mlflow.exceptions import MlflowException

    from ecgpipe.core.errors import TrackingStoreError
    from ecgpipe.tracking.runs import tracking_uri

    store = tracking_uri()
    if _no_store_file(store):
        raise TrackingStoreError(f"no MLflow store at {store}; set MLFLOW_TRACKING_URI to the store that holds "
                                 f"{registered_model}")
    client = _client(store)
    try:
        found = client.get_model_version(registered_model, str(version))
    except MlflowException as exc:
        raise TrackingStoreError(f"{registered_model} version {version}: not in the MLflow store {store} "
                                 f"({str(exc).strip().splitlines()[0]})") from None
    previous = _version_by_alias(client, registered_model, CHAMPION)
    client.set_registered_model_alias(registered_model, CHAMPION, found.version)
    tag_alias_move(client, registered_model, found.version, CHAMPION, by, why)
    return {"registered_model": registered_model, "version": int(found.version), "run_id": found.run_id,
            "previous_version": None if previous is None else int(previous.version),
            "model_uri": f"models:/{registered_model}@{CHAMPION}"}
