"""Classify new recordings with a trained model, through the preprocessing it was trained with.

A :class:`Predictor` holds the network and its :class:`~ecgpipe.inference.preprocessing.Preprocessing`
(saved in ``model.json``: featurizer, class names; the aggregation of an evaluate stage's
predictor in ``predictor.json``). It is built from a predictor folder (an MLflow model written by
the evaluate stage), a train stage's model folder, or a ``runs:/`` / ``models:/`` URI. This module
reads recording files; turning one into probabilities is the preprocessing object's job.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from ecgpipe.core.errors import PredictError
from ecgpipe.core.units import ADC_PER_MV
from ecgpipe.inference.preprocessing import Decision, Preprocessing
from ecgpipe.inference.readers import InputLimits, Signal, check_gain, check_sampling_rate, read_recording
from ecgpipe.models.heads import predict_logits

PREDICTOR_SPEC = "predictor.json"

EVAL_BATCH_SIZE = 4096  # windows per forward pass unless told otherwise: bounds memory, not results
# Network-input values per forward pass when one recording is scored (ecgpipe predict, the served model):
# 97 crops of the raw ResNet's 2,700 samples, whose activations then take tens of MB, not gigabytes
SCORING_VALUES = 1 << 18


@dataclasses.dataclass
class Scores:
    """Recordings scored by a predictor: each window's logits and owner, and one probability row
    per owner (owners ascending)."""

    logits: torch.Tensor
    owner: torch.Tensor
    rows: torch.Tensor
    probs: torch.Tensor


class Predictor:
    """A trained network with its preprocessing object: raw signal -> class probabilities.

    ``limits`` bound what it accepts (sampling rate, duration): a recording outside them is a
    PredictError before any resampling, so no input can make it allocate without bound."""

    def __init__(self, model: torch.nn.Module, preprocessing: Preprocessing, limits: InputLimits = InputLimits()):
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.limits = limits

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
    def decision(self) -> Decision | None:
        """The served label's rule (None: the most likely class)."""
        return self.preprocessing.decision

    @property
    def min_samples(self) -> int:
        """The fewest samples (at the training rate) that the network can score."""
        return self.preprocessing.featurizer.min_samples

    @classmethod
    def from_folder(cls, folder: str | Path, aggregation: str | None = None) -> "Predictor":
        """A train stage's model folder (``model.pt`` + ``model.json``) or an evaluate stage's
        predictor folder (an MLflow model whose ``artifacts/`` hold them and ``predictor.json``)."""
        from ecgpipe.core.io import read_json
        from ecgpipe.inference.checkpoint import load_trained

        folder = Path(folder)
        if (folder / "MLmodel").is_file():  # a saved pyfunc predictor: its files are an artifact
            folder = folder / "artifacts" / "predictor"
        if not (folder / "model.json").is_file():
            raise PredictError(f"{folder}: not a model folder (no model.json); give a models/NAME or predictors/NAME folder")
        model, spec = load_trained(folder)
        preprocessing = Preprocessing.from_spec(spec)
        if (folder / PREDICTOR_SPEC).is_file():  # how the evaluate stage packaged it
            served = read_json(folder / PREDICTOR_SPEC)
            decision = served.get("decision")
            preprocessing = dataclasses.replace(preprocessing, temperature=float(served.get("temperature", 1.0)),
                                                decision=None if decision is None else Decision.from_dict(decision))
            aggregation = served["aggregation"] if aggregation is None else aggregation
        if aggregation is not None:
            preprocessing = dataclasses.replace(preprocessing, aggregation=aggregation)
        return cls(model, preprocessing)

    def network_input(self, signal: Signal) -> torch.Tensor:
        """The network's input windows for one recording, (n, steps, features)."""
        return self.preprocessing.network_input(signal)

    @torch.no_grad()
    def score(self, signals: list[Signal], owners: list[int], batch_size: int = EVAL_BATCH_SIZE,
              device: torch.device | str = "cpu") -> Scores:
        """Recordings through the whole path: featurizer windows, logits (``batch_size`` windows per
        forward pass, on ``device``, where the network must be), one probability row per owner."""
        for signal in signals:
            self.limits.check(signal)
        x, owner = self.preprocessing.inputs(signals, owners)
        return self.score_windows(x, owner, batch_size, device)

    @torch.no_grad()
    def score_windows(self, x: torch.Tensor, owner: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE,
                      device: torch.device | str = "cpu") -> Scores:
        """Network-input windows ``x`` of recordings ``owner`` (from ``preprocessing.inputs``) to scores."""
        logits = predict_logits(self.model, x.to(device), batch_size).cpu()
        rows, probs = self.preprocessing.aggregate(logits, owner)
        return Scores(logits, owner, rows, probs)

    @torch.no_grad()
    def predict_proba(self, signal: Signal) -> np.ndarray:
        """Probability per class (in ``class_names`` order) for one recording, its windows cut and
        scored a bounded batch at a time (memory that does not grow with the recording's length)."""
        self.limits.check(signal)
        samples = self.preprocessing.samples_at_training_rate(signal)
        steps, features = self.preprocessing.featurizer.input_shape
        per_batch = max(1, SCORING_VALUES // (steps * features))
        logits = torch.cat([predict_logits(self.model, x, per_batch)
                            for x in self.preprocessing.featurizer.window_batches(samples, per_batch)])
        _, probs = self.preprocessing.aggregate(logits, torch.zeros(len(logits), dtype=torch.long))
        return probs[0].numpy().astype(np.float64)

    def classify(self, signal: Signal) -> dict:
        probs = self.predict_proba(signal)
        if not np.isfinite(probs).all():  # never a label for a recording that could not be scored
            raise PredictError("the network's output is not finite for this recording")
        row = {"label": self.class_names[int(self.preprocessing.labels(probs[None, :])[0])],
               **{f"p_{c}": float(p) for c, p in zip(self.class_names, probs)}}
        if self.preprocessing.decision is not None:  # the served operating point, in every output
            row["decision"] = self.preprocessing.decision.describe()
        return row


def served_settings(preprocessing: Preprocessing) -> dict:
    """What a predictor folder's predictor.json holds beside the trained model: how its windows' logits
    become probabilities (aggregation, temperature) and a label (the decision's rule)."""
    settings: dict = {"aggregation": preprocessing.aggregation}
    if preprocessing.temperature != 1.0:
        settings["temperature"] = preprocessing.temperature
    if preprocessing.decision is not None:
        settings["decision"] = preprocessing.decision.to_dict()
    return settings


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
               **{f"p_{c}": math.nan for c in predictor.class_names},
               **({"decision": predictor.decision.describe()} if predictor.decision else {}),
               "error": ""}
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
