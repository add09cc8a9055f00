"""The ensemble of issue 24: a trained network and a gradient-boosted tree model on the recording's
rhythm features, their probabilities averaged (or joined by a learned combiner,
:mod:`ecgpipe.ensemble.combiner`). One object, used like a
:class:`~ecgpipe.inference.predictor.Predictor` (``class_names``, ``limits``, ``decision``, ``classify``): the
same recording reaches both models through the network's own checks and resampling.

An ensemble folder holds ``network/`` (the predictor's ``model.pt``, ``model.json`` and
``predictor.json``), ``trees.npz`` (:class:`~ecgpipe.ensemble.trees.BoostedTrees`) and
``ensemble.json`` (the features in order, the network's weight, the classes, the runs, and a learned
combiner's coefficients where it has one).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgpipe.core.errors import ModelFileError, PredictError
from ecgpipe.core.io import read_json, write_json
from ecgpipe.ensemble.combiner import LogisticCombiner
from ecgpipe.ensemble.rhythm import FEATURE_NAMES, feature_row
from ecgpipe.ensemble.trees import BoostedTrees
from ecgpipe.inference.predictor import PREDICTOR_SPEC, Predictor
from ecgpipe.inference.preprocessing import Decision, served_labels
from ecgpipe.inference.readers import InputLimits, Signal

ENSEMBLE_SPEC = "ensemble.json"
NETWORK_FOLDER = "network"
TREES_FILE = "trees.npz"
ARTIFACT = "ensemble"  # the artifact key and folder of a saved ensemble in an MLflow model
NETWORK_WEIGHT = 0.5  # the equal-weight mean, declared before any fold was scored (issue 24's study)


def network_files(folder: Path) -> Path:
    """The folder that holds a network's ``model.json``: a models/NAME folder, the artifact of a
    predictors/NAME one (an MLflow model), or the network of an ensemble's (either)."""
    folder = Path(folder)
    if (folder / "MLmodel").is_file():
        folder = folder / "artifacts" / (ARTIFACT if (folder / "artifacts" / ARTIFACT).is_dir() else "predictor")
    return folder / NETWORK_FOLDER if (folder / ENSEMBLE_SPEC).is_file() else folder


@dataclass
class RhythmEnsemble:
    predictor: Predictor
    trees: BoostedTrees
    network_weight: float = NETWORK_WEIGHT
    # the served label's rule, fitted on recordings held out of training (None: the most likely class)
    decision: Decision | None = None
    spec: dict | None = None  # ensemble.json of a loaded ensemble (its runs), None before it is saved
    # None: the weighted mean; else fitted on recordings held out of training, in place of the mean
    combiner: LogisticCombiner | None = None

    def __post_init__(self) -> None:
        if self.trees.n_features != len(FEATURE_NAMES):
            raise ModelFileError(f"the tree model takes {self.trees.n_features} features; expected "
                                 f"{len(FEATURE_NAMES)} ({', '.join(FEATURE_NAMES)})")

    @property
    def class_names(self) -> list[str]:
        return self.predictor.class_names

    @property
    def limits(self) -> InputLimits:
        return self.predictor.limits

    @property
    def fs(self) -> float:
        return self.predictor.fs

    def features(self, signal: Signal) -> np.ndarray:
        """(1, features): the rhythm features of the samples the network sees (checked, at its rate)."""
        return feature_row(self.predictor.preprocessing.samples_at_training_rate(signal), self.predictor.fs)[None, :]

    def combine(self, network: np.ndarray, rhythm: np.ndarray) -> np.ndarray:
        if self.combiner is not None:
            return self.combiner(network, rhythm)
        return self.network_weight * network + (1 - self.network_weight) * rhythm

    def predict_proba(self, signal: Signal) -> np.ndarray:
        """Probability per class (``class_names`` order) for one recording."""
        network = self.predictor.predict_proba(signal)  # the limits and the network's checks come first
        return self.combine(network[None, :], self.trees.predict_proba(self.features(signal)))[0]

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """The served label (a class index) of each probability row."""
        return served_labels(self.decision, self.class_names, probs)

    def classify(self, signal: Signal) -> dict:
        probs = self.predict_proba(signal)
        if not np.isfinite(probs).all():
            raise PredictError("the ensemble's output is not finite for this recording")
        row = {"label": self.class_names[int(self.labels(probs[None, :])[0])],
               **{f"p_{c}": float(p) for c, p in zip(self.class_names, probs)}}
        if self.decision is not None:  # the served operating point, in every output
            row["decision"] = self.decision.describe()
        return row

    def save(self, folder: Path, network_source: Path, runs: dict) -> Path:
        """Write the ensemble into the new folder ``folder``: the network's files copied from
        ``network_source``, the trees, and ``ensemble.json`` (with ``runs``: the MLflow runs behind it)."""
        folder = Path(folder)
        (folder / NETWORK_FOLDER).mkdir(parents=True)
        source = network_files(network_source)
        for name in ("model.pt", "model.json", PREDICTOR_SPEC):
            if (source / name).is_file():
                shutil.copy(source / name, folder / NETWORK_FOLDER / name)
        self.trees.save(folder / TREES_FILE)
        self.spec = {"features": list(FEATURE_NAMES), "network_weight": self.network_weight,
                     "class_names": self.class_names, "aggregation": self.predictor.aggregation,
                     **({"decision": self.decision.to_dict()} if self.decision is not None else {}),
                     **({"combiner": self.combiner.to_dict()} if self.combiner is not None else {}), **runs}
        write_json(folder / ENSEMBLE_SPEC, self.spec)
        return folder

    @classmethod
    def from_folder(cls, folder: str | Path) -> RhythmEnsemble:
        """An ensemble folder, or an MLflow model folder that holds one as its artifact."""
        folder = Path(folder)
        if (folder / "MLmodel").is_file():
            folder = folder / "artifacts" / ARTIFACT
        if not is_ensemble(folder):
            raise ModelFileError(f"{folder}: not an ensemble folder (no {ENSEMBLE_SPEC})")
        spec = read_json(folder / ENSEMBLE_SPEC)
        if spec.get("features") != list(FEATURE_NAMES):
            raise ModelFileError(f"{folder / ENSEMBLE_SPEC}: made with other rhythm features than this ecgpipe "
                                 f"computes; expected {list(FEATURE_NAMES)}: fit the ensemble again")
        predictor = Predictor.from_folder(folder / NETWORK_FOLDER)
        trees = BoostedTrees.load(folder / TREES_FILE)
        if trees.predict_proba(np.zeros((1, trees.n_features))).shape[1] != len(predictor.class_names):
            raise ModelFileError(f"{folder}: the tree model and the network have different classes")
        try:
            decision = Decision.from_dict(spec["decision"]) if "decision" in spec else None
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{folder / ENSEMBLE_SPEC}: decision: expected positive, threshold and sensitivity, "
                                 f"got {spec['decision']!r}") from None
        try:
            combiner = (LogisticCombiner.from_dict(spec["combiner"], len(predictor.class_names))
                        if "combiner" in spec else None)
        except ValueError as exc:
            raise ModelFileError(f"{folder / ENSEMBLE_SPEC}: combiner: {exc}") from None
        return cls(predictor, trees, float(spec["network_weight"]), decision, spec, combiner)


def is_ensemble(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / ENSEMBLE_SPEC).is_file() or (folder / "artifacts" / ARTIFACT / ENSEMBLE_SPEC).is_file()

