"""The ensemble as an MLflow pyfunc model: the same input, output and HTTP contract as a single
network's predictor (``tracking.pyfunc``), the ensemble's files as its artifact, and only the
inference code (this module's import closure) in its ``code/``."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ecgpipe.core.imports import module_closure
from ecgpipe.ensemble.model import ARTIFACT, RhythmEnsemble, is_ensemble
from ecgpipe.inference.readers import InputLimits
from ecgpipe.tracking.pyfunc import PredictorModel, signature
from ecgpipe.tracking.runs import served_requirements
from ecgpipe.tracking.serving import MAX_REQUEST_BYTES, install_in_scoring_server, refuse_to_serve


class EnsembleModel(PredictorModel):
    """``PredictorModel``'s rows (label, p_<class>, error, model), answered by the ensemble."""

    def load_context(self, context) -> None:
        install_in_scoring_server(lambda rows: self.predict(context, rows))
        with refuse_to_serve(context.artifacts[ARTIFACT]):
            self.predictor = RhythmEnsemble.from_folder(context.artifacts[ARTIFACT])
        self.model_run = str(self.predictor.spec.get("run_id", ""))


def _code(into: Path) -> Path:
    root = Path(__file__).resolve().parents[2]
    for relative in sorted(module_closure(root, __name__)):
        (into / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / relative, into / relative)
    return into / "ecgpipe"


def model_kwargs(ensemble_dir: Path, example: np.ndarray, tmp: Path) -> dict:
    """``mlflow.pyfunc.save_model``/``log_model`` keywords for the ensemble folder ``ensemble_dir``."""
    ensemble = RhythmEnsemble.from_folder(ensemble_dir)
    return {
        "python_model": EnsembleModel(),
        "artifacts": {ARTIFACT: str(ensemble_dir)},
        "signature": signature(ensemble.class_names, decision=ensemble.decision is not None),
        "input_example": pd.DataFrame({"signal": [example.astype(np.float64).tolist()], "fs": [ensemble.fs]}),
        "code_paths": [str(_code(tmp / "code"))],
        "pip_requirements": served_requirements(),
        "metadata": {"input": InputLimits().describe(), "max_request_bytes_default": MAX_REQUEST_BYTES},
    }


def model_folder(source: str) -> str:
    """The local folder of ``ecgpipe predict --model``: the folder given, or an MLflow ``runs:/`` /
    ``models:/`` URI's download."""
    # the registry's own download (one-line errors); private there, as no stage needs it public
    from ecgpipe.tracking.registry import download_mlflow_model

    return download_mlflow_model(source) if source.startswith(("runs:/", "models:/")) else source


def load_classifier(source: str):
    """A predictor or an ensemble, from a folder or an MLflow ``runs:/``/``models:/`` URI: what
    ``ecgpipe predict --model`` takes."""
    from ecgpipe.tracking.registry import load_predictor

    folder = model_folder(source)
    return RhythmEnsemble.from_folder(folder) if is_ensemble(folder) else load_predictor(folder)
