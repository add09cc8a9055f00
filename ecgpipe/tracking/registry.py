"""The MLflow Model Registry side: predictors loaded from ``runs:/`` and ``models:/`` URIs, and the
champion alias that the report stage moves."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ecgpipe.core.errors import PredictError
from ecgpipe.core.io import read_json
from ecgpipe.inference.predictor import Predictor


def load_predictor(source: str) -> Predictor:
    """From a predictor or model folder, or from an MLflow ``runs:/...`` or ``models:/...`` URI of a predictor."""
    if source.startswith(("runs:/", "models:/")):
        return Predictor.from_folder(_download_mlflow_model(source))
    return Predictor.from_folder(source)


def _download_mlflow_model(uri: str) -> str:
    """The local folder of an MLflow ``runs:/`` or ``models:/`` URI, or a PredictError in one line.

    With the default store, a store file that does not exist is an error, not a new empty store.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from ecgpipe.tracking.runs import TRACKING_ENV, check_store_file, tracking_uri

    store = tracking_uri()
    if not os.environ.get(TRACKING_ENV) and not Path(store.removeprefix("sqlite:///")).is_file():
        raise PredictError(f"{uri}: no MLflow store at {store}; set {TRACKING_ENV} to the store that holds the model")
    check_store_file(store, write=False)
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=store)
    except MlflowException as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PredictError(f"{uri}: not found in the MLflow store {store} ({first_line})") from None


CHAMPION = "champion"


def register_champion(table: pd.DataFrame, metric: str, models_dir: Path, registered_model: str) -> dict:
    """Register the best experiment's predictor in the MLflow Model Registry with the alias
    ``champion``; a new version only when the champion's run changed."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ecgpipe.tracking.pyfunc import ARTIFACT
    from ecgpipe.tracking.runs import RUN_FILE, check_store_file

    best = table.loc[table[metric].astype(float).idxmax()]
    run = read_json(Path(models_dir) / best["experiment"] / RUN_FILE)
    check_store_file(run["tracking_uri"])
    mlflow.set_tracking_uri(run["tracking_uri"])
    client = MlflowClient()
    try:
        current = client.get_model_version_by_alias(registered_model, CHAMPION)
    except mlflow.exceptions.MlflowException:
        current = None
    if current is not None and current.run_id == run["run_id"]:
        version = current.version
    else:
        version = mlflow.register_model(f"runs:/{run['run_id']}/{ARTIFACT}", registered_model).version
        client.set_registered_model_alias(registered_model, CHAMPION, version)
    return {"experiment": best["experiment"], metric: float(best[metric]), "run_id": run["run_id"],
            "registered_model": registered_model, "version": int(version),
            "model_uri": f"models:/{registered_model}@{CHAMPION}"}
