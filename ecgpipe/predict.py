"""Classify new recordings with a trained model, with exactly the preprocessing it was trained with.

A :class:`Predictor` holds the network and its spec (``model.json``: sampling rate, spectrogram
settings, per-frequency normalisation, chunk size, class names) plus the rule that turns chunk
outputs into one probability per recording. It is built from a predictor folder (an MLflow model
written by the evaluate stage), a train stage's model folder, or a ``runs:/`` / ``models:/`` URI.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal
import torch

from ecgpipe.data.records import RecordError, read_signal
from ecgpipe.data.spectrogram import Normalisation, window_count
from ecgpipe.evaluation import aggregate_by_record

ADC_PER_MV = 1000  # the CinC recordings' units: 1/1000 mV; other units are converted to these
PREDICTOR_SPEC = "predictor.json"


class PredictError(ValueError):
    """A recording that cannot be classified (the message says why)."""


# Sampling rates that resampling to the training rate can handle (a ratio of at most 1000:1).
MIN_FS_HZ, MAX_FS_HZ = 1.0, 100_000.0


def _as_float(value) -> float:
    """``value`` as a float; NaN (which every check below rejects) if it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def check_sampling_rate(fs: float, what: str = "--fs") -> float:
    """``fs`` as a float, or a PredictError naming ``what`` and the accepted range."""
    value = _as_float(fs)
    if not MIN_FS_HZ <= value <= MAX_FS_HZ:  # also false for NaN
        raise PredictError(f"{what}: expected a sampling rate in Hz from {MIN_FS_HZ:g} to {MAX_FS_HZ:g}, got {fs!r}")
    return value


def check_gain(gain: float, what: str = "--gain") -> float:
    """``gain`` (units per mV) as a positive finite float, or a PredictError naming ``what``."""
    value = _as_float(gain)
    if not (math.isfinite(value) and value > 0):
        raise PredictError(f"{what}: expected a positive number of units per mV, got {gain!r}")
    return value


@dataclass
class Signal:
    samples: np.ndarray  # 1-D, in CinC units (1/1000 mV)
    fs: float


def read_recording(path: str | Path, fs: float | None = None, gain: float = ADC_PER_MV) -> Signal:
    """Read a CinC ``.mat``, a WFDB record (``.hea``), a one-column ``.csv`` or a ``.npy`` signal.

    ``.mat`` files are taken at 300 Hz unless ``fs`` says otherwise; WFDB headers carry their rate
    and gain; ``.csv`` and ``.npy`` need ``fs``, and their samples are taken in units of
    1/``gain`` mV (CinC units by default).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    if suffix == ".mat":
        try:
            samples = read_signal(path).astype(np.float64)
        except RecordError as exc:
            raise PredictError(str(exc)) from None
        return Signal(samples, 300.0 if fs is None else fs)
    if suffix == ".hea":
        import wfdb

        try:
            record = wfdb.rdrecord(str(path.with_suffix("")), physical=False)
        except Exception as exc:  # wfdb raises many kinds for a bad header or signal file
            raise PredictError(f"{path}: not a readable WFDB record ({type(exc).__name__}: {exc})") from None
        if record.d_signal is None or record.d_signal.shape[1] < 1:
            raise PredictError(f"{path}: the WFDB record has no signal")
        digital = record.d_signal[:, 0].astype(np.float64)
        physical_mv = (digital - record.baseline[0]) / record.adc_gain[0]
        return Signal(physical_mv * ADC_PER_MV, float(record.fs) if fs is None else fs)
    if suffix in (".csv", ".npy"):
        if fs is None:
            raise PredictError(f"{path}: a {suffix} signal needs its sampling rate (--fs)")
        try:
            with warnings.catch_warnings():  # an empty file: our own error below says so, once
                warnings.simplefilter("ignore")
                if suffix == ".npy":
                    samples = np.load(path, allow_pickle=False)
                else:
                    samples = np.loadtxt(path, delimiter=",", ndmin=1, skiprows=_header_rows(path))
        except Exception as exc:
            raise PredictError(f"{path}: not a readable {suffix} signal ({type(exc).__name__}: {exc})") from None
        if samples.dtype.kind not in "biuf":  # strings, objects, records, complex numbers
            raise PredictError(f"{path}: expected numeric samples, got dtype {samples.dtype}")
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.ravel()
        if samples.ndim != 1:
            raise PredictError(f"{path}: expected one column of samples, got shape {samples.shape}")
        return Signal(samples * (ADC_PER_MV / gain), fs)
    raise PredictError(f"{path}: unknown format {suffix!r}; expected .mat, .hea, .csv or .npy")


def _header_rows(path: Path) -> int:
    with open(path, errors="replace") as f:
        first = f.readline().strip()
    try:
        float(first.split(",")[0])
        return 0
    except ValueError:
        return 1


class Predictor:
    """A trained network with its preprocessing and aggregation: raw signal -> class probabilities."""

    def __init__(self, model: torch.nn.Module, spec: dict, aggregation: str = "mean_logit"):
        self.model = model.eval()
        self.spec = spec
        self.aggregation = aggregation
        pre = spec["preprocessing"]
        self.fs = float(pre["sampling_rate_hz"])
        self.nperseg, self.noverlap, self.scaling = pre["nperseg"], pre["noverlap"], pre["scaling"]
        self.normalisation = Normalisation.from_dict(pre["normalisation"])
        self.chunk_size = spec["chunk_size"]
        self.class_names = list(spec["class_names"])

    @property
    def min_samples(self) -> int:
        """The fewest samples (at the training rate) that give one chunk of windows."""
        return self.nperseg + self.chunk_size * (self.nperseg - self.noverlap)

    def to_dict(self) -> dict:
        return {**self.spec, "aggregation": self.aggregation}

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
        if aggregation is None:
            saved = folder / PREDICTOR_SPEC
            aggregation = read_json(saved)["aggregation"] if saved.is_file() else "mean_logit"
        return cls(model, spec, aggregation)

    @classmethod
    def load(cls, source: str) -> "Predictor":
        """From a folder, or from an MLflow ``runs:/...`` or ``models:/...`` URI of a predictor."""
        if source.startswith(("runs:/", "models:/")):
            return cls.from_folder(_download_mlflow_model(source))
        return cls.from_folder(source)

    def network_input(self, signal: Signal) -> torch.Tensor:
        """The chunks (n, chunk_size, bins) of one recording, as the chunk stage makes them."""
        samples = np.asarray(signal.samples, dtype=np.float64)
        if samples.size == 0:
            raise PredictError("the recording is empty")
        if not np.isfinite(samples).all():
            raise PredictError("the recording has non-finite samples (NaN or infinity)")
        fs = check_sampling_rate(signal.fs, "sampling rate")
        if not math.isclose(fs, self.fs):
            ratio = Fraction(self.fs / fs).limit_denominator(1000)
            samples = scipy.signal.resample_poly(samples, ratio.numerator, ratio.denominator)
        windows = int(window_count(len(samples), self.nperseg, self.noverlap))
        n_chunks = max(windows, 0) // self.chunk_size
        if n_chunks == 0:
            seconds = self.min_samples / self.fs
            raise PredictError(
                f"the recording is shorter than one chunk: {len(samples)} samples at {self.fs:g} Hz, "
                f"needs at least {self.min_samples} ({seconds:.1f} s)"
            )
        if np.ptp(samples) == 0:
            raise PredictError(f"the recording is flat (every sample is {samples[0]:g}): no signal to classify")
        # float32 as in training; windows inside the recording do not depend on any padding
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, once
            _, _, sxx = scipy.signal.spectrogram(samples.astype(np.float32), scaling=self.scaling,
                                                 nperseg=self.nperseg, noverlap=self.noverlap)
            spectra = np.ascontiguousarray(sxx.T[: n_chunks * self.chunk_size])
            self.normalisation.apply_(spectra)
        if not np.isfinite(spectra).all():
            peak = float(np.max(np.abs(samples)))
            raise PredictError(
                f"the recording's spectrogram is not finite: samples up to {peak:.3g} (in 1/1000 mV) overflow "
                "float32; check the signal's units (--gain)"
            )
        return torch.from_numpy(spectra).view(n_chunks, self.chunk_size, -1)

    @torch.no_grad()
    def predict_proba(self, signal: Signal) -> np.ndarray:
        """Probability per class (in ``class_names`` order) for one recording."""
        chunks = self.network_input(signal)
        logits = self.model(chunks)
        _, probs = aggregate_by_record(logits, torch.zeros(len(chunks), dtype=torch.long), self.aggregation)
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

    from ecgpipe.tracking import TRACKING_ENV, tracking_uri

    store = tracking_uri()
    if not os.environ.get(TRACKING_ENV) and not Path(store.removeprefix("sqlite:///")).is_file():
        raise PredictError(f"{uri}: no MLflow store at {store}; set {TRACKING_ENV} to the store that holds the model")
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
                  gain: float = ADC_PER_MV) -> list[dict]:
    """One row per file: record, label, p_<class>, and error (empty when it was classified).

    ``fs`` and ``gain`` are checked first (a PredictError for the whole call); a problem with one
    file becomes that file's error, and the other files are still classified.
    """
    if fs is not None:
        fs = check_sampling_rate(fs)
    gain = check_gain(gain)
    rows = []
    for path, name in zip(paths, record_names(paths)):
        row = {"record": name, "label": "", **{f"p_{c}": math.nan for c in predictor.class_names},
               "error": ""}
        try:
            row.update(predictor.classify(read_recording(path, fs, gain)))
        except (PredictError, ValueError, OSError) as exc:  # this file's problem, not the call's
            message = str(exc)
            row["error"] = message if message.startswith(str(path)) else f"{path}: {message}"
        rows.append(row)
    return rows
