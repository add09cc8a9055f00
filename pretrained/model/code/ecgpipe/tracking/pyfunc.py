"""The predictor as an MLflow pyfunc model: what `mlflow models serve` and the Model Registry hold.

Input: a table with a ``signal`` column (one recording's samples, CinC units: 1/1000 mV) and an
``fs`` column (its sampling rate in Hz, 50 to 10,000), each recording at most 24 h long
(:class:`~ecgpipe.inference.readers.InputLimits`). Output: ``label``, ``p_<class>`` per class,
``error`` (empty when the recording was classified; a bad recording does not fail the others: its
row has null probabilities and the error's one line) and ``model`` (the MLflow run that trained
the answering model). Served, requests are bounded and errors are one line (``tracking.serving``).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

from ecgpipe.core.errors import PredictError
from ecgpipe.core.imports import module_closure
from ecgpipe.core.io import read_json, write_json
from ecgpipe.inference.predictor import PREDICTOR_SPEC, Predictor
from ecgpipe.inference.readers import InputLimits, Signal
from ecgpipe.tracking.runs import RUN_FILE, served_requirements
from ecgpipe.tracking.serving import MAX_REQUEST_BYTES, install_in_scoring_server, refuse_to_serve

ARTIFACT = "predictor"  # the artifact key and the folder under artifacts/ of a saved predictor


def _trained_by(artifact_folder: str) -> str:
    """The MLflow run that trained the model in ``artifact_folder`` ("" for one trained outside MLflow)."""
    try:
        return str(read_json(Path(artifact_folder) / PREDICTOR_SPEC).get("run_id", ""))
    except (OSError, ValueError):
        return ""


class PredictorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        # before `mlflow models serve` builds its app: see tracking.serving
        install_in_scoring_server(lambda rows: self.predict(context, rows))
        with refuse_to_serve(context.artifacts[ARTIFACT]):
            self.predictor = Predictor.from_folder(context.artifacts[ARTIFACT])
        self.model_run = _trained_by(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = []
        for signal, fs in zip(model_input["signal"], model_input["fs"]):
            # an error row's probabilities are None: JSON's null, where NaN would not be JSON
            row = {"label": "", **{f"p_{c}": None for c in self.predictor.class_names}, "error": "",
                   "model": self.model_run}
            try:
                samples = np.asarray(signal, dtype=np.float64)
                # the rate first, so that a missing or non-numeric fs is a row error, not a crash
                row.update(self.predictor.classify(Signal(samples, self.predictor.limits.check_rate(fs))))
            except (PredictError, ValueError, TypeError) as exc:
                row["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            rows.append(row)
        decision = self.predictor.decision
        columns = ["label", *[f"p_{c}" for c in self.predictor.class_names], *(["decision"] if decision else []),
                   "error", "model"]
        for row in rows:  # an error row says the rule too: it belongs to the model, not the recording
            if decision is not None:
                row["decision"] = decision.describe()
        return pd.DataFrame(rows, columns=columns, dtype=object)


def signature(class_names: list[str], decision: bool = False) -> ModelSignature:
    """The served model's input and output columns; ``decision``: it says its operating point."""
    inputs = Schema([ColSpec(Array("double"), "signal"), ColSpec("double", "fs")])
    outputs = Schema([ColSpec("string", "label"), *[ColSpec("double", f"p_{c}", required=False) for c in class_names],
                      *([ColSpec("string", "decision")] if decision else []),
                      ColSpec("string", "error"), ColSpec("string", "model")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _artifact_folder(model_dir: Path, served: dict, into: Path) -> Path:
    """The weights and spec of a trained model, with how it is served (``served_settings``), in one folder."""
    folder = into / ARTIFACT
    folder.mkdir(parents=True)
    for name in ("model.pt", "model.json"):
        shutil.copy(Path(model_dir) / name, folder / name)
    trained_by = Path(model_dir) / RUN_FILE  # the train stage's MLflow run: the reply names it
    run_id = read_json(trained_by)["run_id"] if trained_by.is_file() else ""
    write_json(folder / PREDICTOR_SPEC, {**served, "run_id": run_id})
    return folder


def inference_code(into: Path) -> Path:
    """A copy of the ecgpipe modules the served model runs (this module's import closure: inference
    and what it stands on), without training, the pipeline, benchmarks or the CLI."""
    root = Path(__file__).resolve().parents[2]
    for relative in sorted(module_closure(root, __name__)):
        (into / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / relative, into / relative)
    return into / "ecgpipe"


def _model_kwargs(model_dir: Path, served: dict, example: np.ndarray, tmp: Path) -> dict:
    predictor = Predictor.from_folder(_artifact_folder(model_dir, served, tmp))
    return {
        "python_model": PredictorModel(),
        "artifacts": {ARTIFACT: str(tmp / ARTIFACT)},
        "signature": signature(predictor.class_names, predictor.decision is not None),
        "input_example": pd.DataFrame({"signal": [example.astype(np.float64).tolist()], "fs": [predictor.fs]}),
        # the inference code travels with the model, so it also serves where ecgpipe is not installed
        "code_paths": [str(inference_code(tmp / "code"))],
        "pip_requirements": served_requirements(),
        "metadata": {"input": InputLimits().describe(), "max_request_bytes_default": MAX_REQUEST_BYTES},
    }


def save_predictor(model_dir: Path, served: dict, example: np.ndarray, path: Path) -> None:
    """Write the predictor (``model_dir``'s model, served as ``served`` says: ``served_settings``) as an
    MLflow model folder into the empty folder ``path``.

    Not byte-deterministic: MLflow stamps every saved model with its creation time and a random
    ``model_uuid`` (in ``MLmodel``). No stage reads this folder, so that reruns nothing.
    """
    with tempfile.TemporaryDirectory() as tmp:
        Path(path).rmdir()  # save_model wants to create the folder itself
        mlflow.pyfunc.save_model(path=str(path), **_model_kwargs(model_dir, served, example, Path(tmp)))


def log_predictor(model_dir: Path, served: dict, example: np.ndarray) -> str:
    """Log the predictor into the active MLflow run as ``predictor``; returns its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        info = mlflow.pyfunc.log_model(name=ARTIFACT, **_model_kwargs(model_dir, served, example, Path(tmp)))
    return info.model_uri
