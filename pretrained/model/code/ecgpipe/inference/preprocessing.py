"""One preprocessing object per trained model: raw recording -> network input -> one probability per class.

A trained model carries a :class:`Preprocessing` in its ``model.json``: the *featurizer* that turns
a recording (CinC units, 1/1000 mV) into the network's input windows (``featurizers.py``), the
class names, and the *aggregation* that turns the windows' logits into one probability per class.
The training loaders, the evaluate stage, ``ecgpipe predict`` and the served pyfunc model all go
through it, so a recording is scored by one path everywhere (the tests check the numbers agree).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
import torch

from ecgpipe.core.errors import PredictError
from ecgpipe.inference.featurizers import Featurizer, SpectrogramChunks, featurizer_from_dict
from ecgpipe.inference.readers import AmplitudeCheck, Signal, check_sampling_rate
from ecgpipe.models.heads import probabilities
from ecgpipe.signal.resample import StreamResampler

Aggregation = Literal["mean_logit", "mean_probability"]
BLOCK_SAMPLES = 1 << 22  # a recording is read, checked and resampled 32 MB (float64) at a time


# --- logits to probabilities ----------------------------------------------------------------


def aggregate_by_record(
    logits: torch.Tensor, records: torch.Tensor, how: Aggregation, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One probability row per recording from its windows' logits.

    ``mean_logit`` averages the logits and then applies sigmoid/softmax; ``mean_probability``
    averages the windows' probabilities. Each logit is divided by ``temperature`` first (1: as the
    network gives them). Returns (recording ids in ascending order, probabilities).
    """
    if temperature != 1.0:
        logits = logits / temperature
    rows, inverse = torch.unique(records, sorted=True, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(rows)).to(logits.dtype)[:, None]

    def mean_per_record(values: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(len(rows), values.shape[1], dtype=values.dtype).index_add_(0, inverse, values)
        return sums / counts

    if how == "mean_logit":
        return rows, probabilities(mean_per_record(logits))
    if how == "mean_probability":
        return rows, mean_per_record(probabilities(logits))
    raise ValueError(f"aggregation must be 'mean_logit' or 'mean_probability', got {how!r}")


# --- the object a model carries (its featurizers are in featurizers.py) ---------------------------


@dataclass(frozen=True)
class Decision:
    """The served label's rule: ``positive`` when its probability reaches ``threshold``, else the most
    likely other class. The threshold was chosen on recordings held out of training (never on those
    it is reported on) to find ``sensitivity`` of their ``positive`` recordings."""

    positive: str
    threshold: float
    sensitivity: float

    def describe(self) -> str:
        return f"{self.positive} when P({self.positive}) >= {self.threshold:.4g}, else the most likely other class"

    def to_dict(self) -> dict:
        return {"positive": self.positive, "threshold": self.threshold, "sensitivity": self.sensitivity}

    @classmethod
    def from_dict(cls, data: dict) -> "Decision":
        return cls(str(data["positive"]), float(data["threshold"]), float(data["sensitivity"]))


def served_labels(decision: Decision | None, class_names: tuple[str, ...] | list[str], probs: np.ndarray) -> np.ndarray:
    """The served label (a class index) of each probability row: the decision's rule, or the most
    likely class (a network's and an ensemble's alike)."""
    probs = np.asarray(probs)
    if decision is None:
        return probs.argmax(axis=1)
    positive = list(class_names).index(decision.positive)
    others = probs.copy()
    others[:, positive] = -np.inf
    return np.where(probs[:, positive] >= decision.threshold, positive, others.argmax(axis=1))


@dataclass(frozen=True)
class Preprocessing:
    """Featurizer, classes and aggregation of one trained model: a raw recording in, probabilities out."""

    featurizer: Featurizer
    class_names: tuple[str, ...]
    aggregation: Aggregation = "mean_logit"
    # fitted on recordings held out of training (the evaluate stage, where split.calibration > 0):
    # the logits' divisor, and the served label's rule (None: the most likely class)
    temperature: float = 1.0
    decision: Decision | None = None

    @property
    def fs(self) -> float:
        return self.featurizer.sampling_rate_hz

    def samples_at_training_rate(self, signal: Signal) -> np.ndarray:
        """The recording's samples as float64 at the featurizer's rate (resampled if need be), checked.
        Read, checked and resampled a block at a time: memory holds the result (8 bytes a sample at the
        training rate), not the input, which may be a memory-mapped file of a day at 10 kHz."""
        raw = signal.samples
        if raw.dtype.kind not in "iuf":  # bool, complex, strings: no ECG is recorded as those
            raise PredictError(f"expected real-valued samples, got dtype {raw.dtype}")
        if raw.ndim != 1:
            raise PredictError(f"expected one column of samples, got shape {raw.shape}")
        if raw.size == 0:
            raise PredictError("the recording is empty")
        fs = check_sampling_rate(signal.fs, "sampling rate")
        amplitude = AmplitudeCheck(len(raw))
        ratio = Fraction(self.fs / fs).limit_denominator(1000)
        resampler = None if math.isclose(fs, self.fs) else StreamResampler(ratio.numerator, ratio.denominator,
                                                                             len(raw))
        out = np.empty(len(raw) if resampler is None else resampler.n_out)
        filled = 0
        for start, block in signal.blocks(BLOCK_SAMPLES):
            amplitude.add(block, start)
            part = block if resampler is None else resampler.push(block)
            out[filled: filled + len(part)] = part
            filled += len(part)
        amplitude.check()
        if resampler is not None:
            out[filled:] = resampler.finish()
        return out

    def network_input(self, signal: Signal) -> torch.Tensor:
        """The network-input windows of one recording: (n, steps, features)."""
        return self.featurizer.windows(self.samples_at_training_rate(signal))

    def inputs(self, signals: list[Signal], owners: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows of several recordings, concatenated in order, and each window's owner id."""
        parts = [self.network_input(s) for s in signals]
        owner = torch.repeat_interleave(torch.as_tensor(owners, dtype=torch.long),
                                        torch.tensor([len(p) for p in parts]))
        return torch.cat(parts), owner

    def aggregate(self, logits: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(owner ids ascending, one probability row per owner) from the windows' logits."""
        return aggregate_by_record(logits, owner, self.aggregation, self.temperature)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """The served label (a class index) of each probability row: :func:`served_labels`."""
        return served_labels(self.decision, self.class_names, probs)

    def to_dict(self) -> dict:
        data = {"featurizer": self.featurizer.to_dict(), "class_names": list(self.class_names),
                "aggregation": self.aggregation}
        if self.temperature != 1.0:  # a model without them keeps the model.json it had
            data["temperature"] = self.temperature
        if self.decision is not None:
            data["decision"] = self.decision.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        decision = data.get("decision")
        return cls(featurizer_from_dict(data["featurizer"]), tuple(data["class_names"]), data["aggregation"],
                   float(data.get("temperature", 1.0)), None if decision is None else Decision.from_dict(decision))

    @classmethod
    def from_spec(cls, spec: dict) -> "Preprocessing":
        """From a ``model.json``; models saved before the featurizers existed hold the spectrogram
        stage's settings and the chunk size instead."""
        pre = spec["preprocessing"]
        if "featurizer" in pre:
            return cls.from_dict(pre)
        return cls(SpectrogramChunks.from_stage(pre, spec["chunk_size"]), tuple(spec["class_names"]))
