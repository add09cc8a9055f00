"""Classify new recordings with a trained model, through the preprocessing it was trained with.

A :class:`Predictor` holds the network and its :class:`~ecgpipe.preprocessing.Preprocessing`
(saved in ``model.json``: featurizer, class names; the aggregation of an evaluate stage's
predictor in ``predictor.json``). It is built from a predictor folder (an MLflow model written by
the evaluate stage), a train stage's model folder, or a ``runs:/`` / ``models:/`` URI. This module
reads recording files; turning one into probabilities is the preprocessing object's job.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ecgpipe.data.records import RecordError, read_signal
from ecgpipe.preprocessing import (  # noqa: F401  (re-exported: the names predict's users know)
    ADC_PER_MV, PredictError, Preprocessing, Signal, check_gain, check_sampling_rate,
)

PREDICTOR_SPEC = "predictor.json"


def _lead_index(path: Path, names: list[str], lead: str | None) -> int:
    """The index of the lead to classify: the only one, or the one ``lead`` names (name or index)."""
    if lead is None:
        if len(names) > 1:
            raise PredictError(f"{path}: a {len(names)}-lead record ({', '.join(names)}); choose the lead to classify "
                               "with --lead NAME or INDEX")
        return 0
    if lead in names:
        return names.index(lead)
    if lead.isdigit() and int(lead) < len(names):
        return int(lead)
    raise PredictError(f"{path}: no lead {lead!r}; expected one of its leads {names} or an index below {len(names)}")


def read_recording(path: str | Path, fs: float | None = None, gain: float = ADC_PER_MV,
                   lead: str | None = None) -> Signal:
    """Read a CinC ``.mat``, a WFDB record (``.hea``), a one-column ``.csv`` or a ``.npy`` signal.

    ``.mat`` files are taken at 300 Hz unless ``fs`` says otherwise; WFDB headers carry their rate
    and gain; ``.csv`` and ``.npy`` need ``fs``, and their samples are taken in units of
    1/``gain`` mV (CinC units by default). A WFDB record with several leads needs ``lead`` (a
    name from its header, or an index); the other formats hold one lead (``lead`` 0, if given).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    if suffix != ".hea":
        _lead_index(path, ["0"], lead)  # one lead: only 0 (or none) names it
    if suffix == ".mat":
        try:
            samples = read_signal(path).astype(np.float64)
        except RecordError as exc:
            raise PredictError(str(exc)) from None
        return Signal(samples, 300.0 if fs is None else fs, "0" if lead is not None else "")
    if suffix == ".hea":
        import wfdb

        try:
            record = wfdb.rdrecord(str(path.with_suffix("")), physical=False)
        except Exception as exc:  # wfdb raises many kinds for a bad header or signal file
            raise PredictError(f"{path}: not a readable WFDB record ({type(exc).__name__}: {exc})") from None
        if record.d_signal is None or record.d_signal.shape[1] < 1:
            raise PredictError(f"{path}: the WFDB record has no signal")
        names = [str(n) for n in (record.sig_name or range(record.d_signal.shape[1]))]
        i = _lead_index(path, names, lead)
        digital = record.d_signal[:, i].astype(np.float64)
        physical_mv = (digital - record.baseline[i]) / record.adc_gain[i]
        return Signal(physical_mv * ADC_PER_MV, float(record.fs) if fs is None else fs, names[i])
    if suffix in (".csv", ".npy"):
        if fs is None:
            raise PredictError(f"{path}: a {suffix} signal needs its sampling rate (--fs)")
        try:
            with warnings.catch_warnings():  # an empty file: our own error below says so, once
                warnings.simplefilter("ignore")
                if suffix == ".npy":
                    samples = np.load(path, allow_pickle=False)
                else:
                    samples = np.loadtxt(path, delimiter=",", ndmin=1, skiprows=_header_rows(path),
                                         encoding="utf-8-sig")  # a byte-order mark is no header
        except Exception as exc:
            raise PredictError(f"{path}: not a readable {suffix} signal ({type(exc).__name__}: {exc})") from None
        if samples.dtype.kind not in "iuf":  # bools, strings, objects, records, complex numbers
            raise PredictError(f"{path}: expected real-valued samples, got dtype {samples.dtype}")
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.ravel()
        if samples.ndim != 1:
            raise PredictError(f"{path}: expected one column of samples, got shape {samples.shape}")
        return Signal(samples * (ADC_PER_MV / gain), fs, "0" if lead is not None else "")
    raise PredictError(f"{path}: unknown format {suffix!r}; expected .mat, .hea, .csv or .npy")


def _header_rows(path: Path) -> int:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline().strip()
    try:
        float(first.split(",")[0])
        return 0
    except ValueError:
        return 1


class Predictor:
    """A trained network with its preprocessing object: raw signal -> class probabilities."""

    def __init__(self, model: torch.nn.Module, preprocessing: Preprocessing):
        self.model = model.eval()
        self.preprocessing = preprocessing

    @property
    def class_names(self) -> list[str]:
        return list(self.preprocessing.class_names)

    @property
    def fs(self) -> float:
        return self.preprocessing.fs

    @property
    def aggregation(self) -> str:
        return self.preprocessing.aggregation

    @property
    def min_samples(self) -> int:
        """The fewest samples (at the training rate) that the network can score."""
        return self.preprocessing.featurizer.min_samples

    @classmethod
    def from_folder(cls, folder: str | Path, aggregation: str | None = None) -> "Predictor":
        """A train stage's model folder (``model.pt`` + ``model.json``) or an evaluate stage's
        predictor folder (an MLflow model whose ``artifacts/`` hold them and ``predictor.json``)."""
        from ecgpipe.experiment import load_trained
        from ecgpipe.io import read_json

        folder = Path(folder)
        if (folder / "MLmodel").is_file():  # a saved pyfunc predictor: its files are an artifact
            folder = folder / "artifacts" / "predictor"
        if not (folder / "model.json").is_file():
            raise PredictError(f"{folder}: not a model folder (no model.json); give a models/NAME or predictors/NAME folder")
        model, spec = load_trained(folder)
        preprocessing = Preprocessing.from_spec(spec)
        if aggregation is None and (folder / PREDICTOR_SPEC).is_file():
            aggregation = read_json(folder / PREDICTOR_SPEC)["aggregation"]
        if aggregation is not None:
            preprocessing = dataclasses.replace(preprocessing, aggregation=aggregation)
        return cls(model, preprocessing)

    @classmethod
    def load(cls, source: str) -> "Predictor":
        """From a folder, or from an MLflow ``runs:/...`` or ``models:/...`` URI of a predictor."""
        if source.startswith(("runs:/", "models:/")):
            return cls.from_folder(_download_mlflow_model(source))
        return cls.from_folder(source)

    def network_input(self, signal: Signal) -> torch.Tensor:
        """The network's input windows for one recording, (n, steps, features)."""
        return self.preprocessing.network_input(signal)

    @torch.no_grad()
    def predict_proba(self, signal: Signal) -> np.ndarray:
        """Probability per class (in ``class_names`` order) for one recording."""
        windows = self.network_input(signal)
        _, probs = self.preprocessing.aggregate(self.model(windows), torch.zeros(len(windows), dtype=torch.long))
        return probs[0].numpy().astype(np.float64)

    def classify(self, signal: Signal) -> dict:
        probs = self.predict_proba(signal)
        if not np.isfinite(probs).all():  # never a label for a recording that could not be scored
            raise PredictError("the network's output is not finite for this recording")
        return {"label": self.class_names[int(probs.argmax())],
                **{f"p_{c}": float(p) for c, p in zip(self.class_names, probs)}}


def _download_mlflow_model(uri: str) -> str:
    """The local folder of an MLflow ``runs:/`` or ``models:/`` URI, or a PredictError in one line.

    With the default store, a store file that does not exist is an error, not a new empty store.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from ecgpipe.tracking import TRACKING_ENV, check_store_file, tracking_uri

    store = tracking_uri()
    if not os.environ.get(TRACKING_ENV) and not Path(store.removeprefix("sqlite:///")).is_file():
        raise PredictError(f"{uri}: no MLflow store at {store}; set {TRACKING_ENV} to the store that holds the model")
    check_store_file(store, write=False)
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=store)
    except MlflowException as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PredictError(f"{uri}: not found in the MLflow store {store} ({first_line})") from None


def record_names(paths: list[str]) -> list[str]:
    """A name per file for the output's ``record`` column: the file's stem, unless two files of
    the call share it (``x.csv`` and ``x.npy``), then the file name, or the path as given."""
    stems = [Path(p).stem for p in paths]
    names = [Path(p).name for p in paths]
    return [stem if stems.count(stem) == 1 else name if names.count(name) == 1 else str(path)
            for stem, name, path in zip(stems, names, paths)]


def predict_files(predictor: Predictor, paths: list[str], fs: float | None = None,
                  gain: float = ADC_PER_MV, lead: str | None = None) -> list[dict]:
    """One row per file: record, label, p_<class>, and error (empty when it was classified); with
    ``lead``, also the lead each was read from.

    ``fs`` and ``gain`` are checked first (a PredictError for the whole call); a problem with one
    file becomes that file's error, and the other files are still classified.
    """
    if fs is not None:
        fs = check_sampling_rate(fs)
    gain = check_gain(gain)
    rows = []
    for path, name in zip(paths, record_names(paths)):
        row = {"record": name, **({"lead": ""} if lead is not None else {}), "label": "",
               **{f"p_{c}": math.nan for c in predictor.class_names}, "error": ""}
        try:
            signal = read_recording(path, fs, gain, lead)
            if lead is not None:
                row["lead"] = signal.lead
            row.update(predictor.classify(signal))
        except (PredictError, ValueError, OSError) as exc:  # this file's problem, not the call's
            message = str(exc)
            row["error"] = message if message.startswith(str(path)) else f"{path}: {message}"
        rows.append(row)
    return rows
