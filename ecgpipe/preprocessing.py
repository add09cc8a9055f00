"""One preprocessing object per trained model: raw recording -> network input -> one probability per class.

A trained model carries a :class:`Preprocessing` in its ``model.json``: the *featurizer* that turns
a recording (CinC units, 1/1000 mV) into the network's input windows, the class names, and the
*aggregation* that turns the windows' logits into one probability per class. The training loaders,
the evaluate stage, ``ecgpipe predict`` and the served pyfunc model all go through it, so a
recording is scored by one path everywhere (the tests check the numbers agree).

Two featurizers:
- :class:`SpectrogramChunks` (the notebook's): a spectrogram of short windows, normalised per
  frequency with the training set's statistics, cut into chunks of ``chunk_size`` consecutive
  windows; the remainder is dropped.
- :class:`RawCrops`: the raw signal in mV, as crops of ``crop_samples``. Training draws one crop at
  a random offset; scoring covers the whole recording with crops spread evenly from its first to
  its last sample (they overlap when the length is not a multiple of the crop).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import ClassVar, Literal

import numpy as np
import scipy.signal
import torch

from ecgpipe.conditioning import ADC_PER_MV, Conditioning
from ecgpipe.data.spectrogram import Normalisation, window_count

# Sampling rates that resampling to the training rate can handle (a ratio of at most 1000:1).
MIN_FS_HZ, MAX_FS_HZ = 1.0, 100_000.0

Aggregation = Literal["mean_logit", "mean_probability"]


class PredictError(ValueError):
    """A recording that cannot be classified (the message says why)."""


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
    lead: str = ""  # the lead it was read from, where the file has several (WFDB)


# The median absolute sample of every CinC recording lies between 5 and 668 units (1/1000 mV);
# outside 1 µV to 50 mV, no ECG does: the units are wrong (a --gain off by 1,000), not the heart.
AMPLITUDE_RANGE = (1.0, 50_000.0)


def check_amplitude(samples: np.ndarray) -> None:
    """A recording that is flat, or whose amplitude no ECG has, is a PredictError (flat first: it
    says more than a median of 0)."""
    _check_not_flat(samples)
    median = float(np.median(np.abs(samples)))
    low, high = AMPLITUDE_RANGE
    if not low <= median <= high:
        raise PredictError(f"the recording's median absolute value is {median:.3g} (in 1/1000 mV), outside any ECG "
                           f"({low:g} µV to {high / 1000:g} mV); check the signal's units (--gain)")


# --- logits to probabilities ----------------------------------------------------------------

def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (n, classes), also for the one-logit binary case."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def aggregate_by_record(
    logits: torch.Tensor, records: torch.Tensor, how: Aggregation
) -> tuple[torch.Tensor, torch.Tensor]:
    """One probability row per recording from its windows' logits.

    ``mean_logit`` averages the logits and then applies sigmoid/softmax; ``mean_probability``
    averages the windows' probabilities. Returns (recording ids in ascending order, probabilities).
    """
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


# --- featurizers ------------------------------------------------------------------------------

def _too_short(samples: np.ndarray, fs: float, needed: int, unit: str) -> PredictError:
    return PredictError(f"the recording is shorter than one {unit}: {len(samples)} samples at {fs:g} Hz, "
                        f"needs at least {needed} ({needed / fs:.1f} s)")


def _check_not_flat(samples: np.ndarray) -> None:
    # on the float32 values the network sees: int64 samples near 9.2e18 differ in float64, not there
    if np.ptp(samples.astype(np.float32)) == 0:
        raise PredictError(f"the recording is flat (every sample is {samples[0]:g}, as float32): no signal to classify")


def _check_float32(samples: np.ndarray) -> None:
    peak = float(np.max(np.abs(samples)))
    if peak > float(np.finfo(np.float32).max):
        raise PredictError(f"the recording's samples reach {peak:.3g} (in 1/1000 mV), beyond float32; "
                           "check the signal's units (--gain)")


def _with_conditioning(data: dict, conditioning: Conditioning) -> dict:
    """A featurizer's dict with its conditioning, left out when off: models trained without the
    robustness options keep their ``model.json`` byte for byte."""
    return data if conditioning.is_identity else {**data, "conditioning": conditioning.to_dict()}


def _sample_windows(samples: np.ndarray, starts: np.ndarray, span: int) -> torch.Tensor:
    """(len(starts), span) float32 windows of one recording's samples."""
    index = torch.from_numpy(starts)[:, None] + torch.arange(span)[None, :]
    return torch.from_numpy(np.ascontiguousarray(samples))[index].to(torch.float32)


_TUKEY_WINDOWS: dict[int, torch.Tensor] = {}


def spectrogram_of_windows(x: torch.Tensor, nperseg: int, noverlap: int, scaling: str) -> torch.Tensor:
    """``scipy.signal.spectrogram``'s defaults (Tukey 0.25 window, constant detrend, one-sided) of each
    row of ``x`` (rows, samples) in torch, batched on any device: (rows, segments, nperseg // 2 + 1)."""
    if nperseg not in _TUKEY_WINDOWS:
        _TUKEY_WINDOWS[nperseg] = torch.from_numpy(scipy.signal.get_window(("tukey", 0.25), nperseg))
    window = _TUKEY_WINDOWS[nperseg].to(x.device, x.dtype)
    segments = x.unfold(-1, nperseg, nperseg - noverlap)
    segments = (segments - segments.mean(dim=-1, keepdim=True)) * window
    power = torch.fft.rfft(segments, dim=-1).abs().square()
    power = power / (window.sum() ** 2 if scaling == "spectrum" else window.square().sum())
    if scaling == "density":
        raise ValueError("spectrogram_of_windows: only scaling 'spectrum' is implemented for conditioned windows")
    last = -1 if nperseg % 2 == 0 else None  # one-sided: every bin but DC (and Nyquist) counted twice
    power[..., 1:last] *= 2
    return power


@dataclass(frozen=True)
class SpectrogramChunks:
    """The notebook's input: chunks of ``chunk_size`` normalised spectrogram windows, (n, chunk_size, bins)."""

    kind: ClassVar[str] = "spectrogram_chunks"
    sampling_rate_hz: float
    nperseg: int
    noverlap: int
    scaling: str
    normalisation: Normalisation
    chunk_size: int
    # robustness options (README, "Recordings from other devices"); the defaults are the notebook's
    # input, computed by scipy over the whole recording. With either set, every chunk is computed
    # from its own span of samples: conditioned, then a spectrogram in torch, then log10(power +
    # log_floor), then normalised with statistics of the training set's conditioned chunks.
    conditioning: Conditioning = Conditioning()
    log_floor: float | None = None

    @property
    def min_samples(self) -> int:
        """The fewest samples (at the training rate) that give one chunk of windows."""
        return self.nperseg + self.chunk_size * (self.nperseg - self.noverlap)

    @property
    def from_samples(self) -> bool:
        """Whether chunks are computed from their own spans of samples (any robustness option set)."""
        return not self.conditioning.is_identity or self.log_floor is not None

    @property
    def window_samples(self) -> int:
        """The span of samples one chunk's windows cover."""
        return self.nperseg + (self.chunk_size - 1) * (self.nperseg - self.noverlap)

    def window_starts(self, n_samples: int) -> np.ndarray:
        """Where each chunk's span starts: consecutive chunks, as the chunk stage cuts them."""
        n_chunks = max(int(window_count(n_samples, self.nperseg, self.noverlap)), 0) // self.chunk_size
        return np.arange(n_chunks, dtype=np.int64) * self.chunk_size * (self.nperseg - self.noverlap)

    def spectra(self, windows: torch.Tensor) -> torch.Tensor:
        """Conditioned (log) spectra of sample spans (n, window_samples), before normalisation."""
        x = self.conditioning.apply(windows.to(torch.float32), self.sampling_rate_hz)
        power = spectrogram_of_windows(x, self.nperseg, self.noverlap, self.scaling)[:, : self.chunk_size]
        return power if self.log_floor is None else torch.log10(power + self.log_floor)

    def from_sample_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Network input (n, chunk_size, bins) from sample spans (n, window_samples), on their device."""
        spectra = self.spectra(windows)
        mean = torch.as_tensor(self.normalisation.mean, dtype=spectra.dtype, device=spectra.device)
        std = torch.as_tensor(self.normalisation.std, dtype=spectra.dtype, device=spectra.device)
        return (spectra - mean) / std

    def fitted_to(self, windows: torch.Tensor, batch: int = 4096) -> "SpectrogramChunks":
        """This featurizer with its normalisation fitted to training spans ``windows`` (float64 statistics)."""
        total = torch.zeros(len(self.normalisation.mean), dtype=torch.float64)
        square = torch.zeros_like(total)
        count = 0
        for start in range(0, len(windows), batch):
            spectra = self.spectra(windows[start : start + batch]).cpu().to(torch.float64).flatten(0, 1)
            total += spectra.sum(dim=0)
            square += spectra.square().sum(dim=0)
            count += len(spectra)
        mean = total / count
        std = (square / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-12)
        return replace(self, normalisation=Normalisation(mean.numpy(), std.numpy()))

    @property
    def input_shape(self) -> tuple[int, int]:
        """(steps, features) of one network input."""
        return self.chunk_size, len(self.normalisation.mean)

    def windows(self, samples: np.ndarray) -> torch.Tensor:
        """The chunks of one recording (float64 samples at ``sampling_rate_hz``), as the chunk stage makes them."""
        n_chunks = max(int(window_count(len(samples), self.nperseg, self.noverlap)), 0) // self.chunk_size
        if n_chunks == 0:
            raise _too_short(samples, self.sampling_rate_hz, self.min_samples, "chunk")
        if self.from_samples:
            _check_float32(samples)
            spans = _sample_windows(samples, self.window_starts(len(samples)), self.window_samples)
            return self.from_sample_windows(spans)
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

    def to_dict(self) -> dict:
        data = {"kind": self.kind, **{k: v for k, v in asdict(self).items() if k not in ("normalisation", "conditioning")},
                "normalisation": self.normalisation.to_dict()}
        if self.log_floor is None:
            del data["log_floor"]
        return _with_conditioning(data, self.conditioning)

    @classmethod
    def from_stage(cls, preprocessing: dict, chunk_size: int) -> "SpectrogramChunks":
        """From the spectrogram stage's ``preprocessing.json`` and the chunk size."""
        return cls(float(preprocessing["sampling_rate_hz"]), preprocessing["nperseg"], preprocessing["noverlap"],
                   preprocessing["scaling"], Normalisation.from_dict(preprocessing["normalisation"]), chunk_size)


@dataclass(frozen=True)
class RawCrops:
    """The raw signal as crops of ``crop_samples``: network input (n, crop_samples, 1), in mV, or in
    robust units (the crop over its robust scale) with ``conditioning.amplitude: mad``."""

    kind: ClassVar[str] = "raw_crops"
    sampling_rate_hz: float
    crop_samples: int
    conditioning: Conditioning = Conditioning()

    @property
    def min_samples(self) -> int:
        return self.crop_samples

    @property
    def window_samples(self) -> int:
        return self.crop_samples

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.crop_samples, 1

    def to_network(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops in CinC units (any dtype, (n, crop_samples)) -> float32 mV, (n, crop_samples, 1)."""
        return (crops.to(torch.float32) * (1.0 / ADC_PER_MV)).unsqueeze(-1)

    def from_sample_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Network input from crops (n, crop_samples) in CinC units: conditioned, then in mV unless
        the conditioning already scaled them."""
        if self.conditioning.is_identity:
            return self.to_network(windows)
        x = self.conditioning.apply(windows.to(torch.float32), self.sampling_rate_hz)
        return (x if self.conditioning.amplitude == "mad" else x * (1.0 / ADC_PER_MV)).unsqueeze(-1)

    def crop_starts(self, n_samples: int) -> np.ndarray:
        """Starts of the crops that cover a recording of ``n_samples``: ``ceil(n / crop)`` crops from
        the first sample to the last, evenly spread (the same for every recording of that length)."""
        n_crops = -(-n_samples // self.crop_samples)
        return np.round(np.linspace(0, n_samples - self.crop_samples, n_crops)).astype(np.int64)

    window_starts = crop_starts

    def gather(self, flat: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Crops at absolute ``starts`` of the 1-D signal store ``flat``, as network input."""
        index = starts[:, None] + torch.arange(self.crop_samples, device=starts.device)[None, :]
        return self.from_sample_windows(flat[index])

    def windows(self, samples: np.ndarray) -> torch.Tensor:
        """The crops of one recording (float64 samples at ``sampling_rate_hz``)."""
        if len(samples) < self.crop_samples:
            raise _too_short(samples, self.sampling_rate_hz, self.crop_samples, "crop")
        _check_float32(samples)
        starts = torch.from_numpy(self.crop_starts(len(samples)))
        return self.gather(torch.from_numpy(np.ascontiguousarray(samples)), starts)

    def to_dict(self) -> dict:
        return _with_conditioning({"kind": self.kind, "sampling_rate_hz": self.sampling_rate_hz,
                                   "crop_samples": self.crop_samples}, self.conditioning)


Featurizer = SpectrogramChunks | RawCrops
FEATURIZERS = {f.kind: f for f in (SpectrogramChunks, RawCrops)}


def featurizer_from_dict(data: dict) -> Featurizer:
    fields = {k: v for k, v in data.items() if k != "kind"}
    fields["conditioning"] = Conditioning.from_dict(fields.get("conditioning"))
    if data["kind"] == SpectrogramChunks.kind:
        return SpectrogramChunks(**{**fields, "normalisation": Normalisation.from_dict(fields["normalisation"])})
    if data["kind"] == RawCrops.kind:
        return RawCrops(**fields)
    raise ValueError(f"unknown featurizer kind {data['kind']!r}; expected one of {sorted(FEATURIZERS)}")


# --- the object a model carries -------------------------------------------------------------------

@dataclass(frozen=True)
class Preprocessing:
    """Featurizer, classes and aggregation of one trained model: a raw recording in, probabilities out."""

    featurizer: Featurizer
    class_names: tuple[str, ...]
    aggregation: Aggregation = "mean_logit"

    @property
    def fs(self) -> float:
        return self.featurizer.sampling_rate_hz

    def samples_at_training_rate(self, signal: Signal) -> np.ndarray:
        """The recording's samples as float64 at the featurizer's rate (resampled if need be), checked."""
        raw = np.asarray(signal.samples)
        if raw.dtype.kind not in "iuf":  # bool, complex, strings: no ECG is recorded as those
            raise PredictError(f"expected real-valued samples, got dtype {raw.dtype}")
        samples = raw.astype(np.float64)
        if samples.size == 0:
            raise PredictError("the recording is empty")
        if not np.isfinite(samples).all():
            raise PredictError("the recording has non-finite samples (NaN or infinity)")
        check_amplitude(samples)
        fs = check_sampling_rate(signal.fs, "sampling rate")
        if not math.isclose(fs, self.fs):
            ratio = Fraction(self.fs / fs).limit_denominator(1000)
            samples = scipy.signal.resample_poly(samples, ratio.numerator, ratio.denominator)
        return samples

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
        return aggregate_by_record(logits, owner, self.aggregation)

    def to_dict(self) -> dict:
        return {"featurizer": self.featurizer.to_dict(), "class_names": list(self.class_names),
                "aggregation": self.aggregation}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        return cls(featurizer_from_dict(data["featurizer"]), tuple(data["class_names"]), data["aggregation"])

    @classmethod
    def from_spec(cls, spec: dict) -> "Preprocessing":
        """From a ``model.json``; models saved before the featurizers existed hold the spectrogram
        stage's settings and the chunk size instead."""
        pre = spec["preprocessing"]
        if "featurizer" in pre:
            return cls.from_dict(pre)
        return cls(SpectrogramChunks.from_stage(pre, spec["chunk_size"]), tuple(spec["class_names"]))
