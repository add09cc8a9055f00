"""Featurizers: a recording's samples at the training rate -> the network's input windows.

- :class:`SpectrogramChunks` (the notebook's): a spectrogram of short windows, normalised per
  frequency with the training set's statistics, cut into chunks of ``chunk_size`` consecutive
  windows; the remainder is dropped.
- :class:`RawCrops`: the raw signal in mV, as crops of ``crop_samples``. Training draws one crop at
  a random offset; scoring covers the whole recording with crops spread evenly from its first to
  its last sample (they overlap when the length is not a multiple of the crop).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np
import torch

from ecgpipe.core.errors import PredictError
from ecgpipe.core.units import ADC_PER_MV
from ecgpipe.signal.conditioning import Conditioning
from ecgpipe.signal.spectrogram import Normalisation, spectrogram_of_windows, window_count
from ecgpipe.signal.windows import cut, sample_windows


def _too_short(samples: np.ndarray, fs: float, needed: int, unit: str) -> PredictError:
    return PredictError(f"the recording is shorter than one {unit}: {len(samples)} samples at {fs:g} Hz, "
                        f"needs at least {needed} ({needed / fs:.1f} s)")


def _with_conditioning(data: dict, conditioning: Conditioning) -> dict:
    """A featurizer's dict with its conditioning, left out when off: models trained without the
    robustness options keep their ``model.json`` byte for byte."""
    return data if conditioning.is_identity else {**data, "conditioning": conditioning.to_dict()}


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
        return torch.cat(list(self.window_batches(samples, None)))

    def window_batches(self, samples: np.ndarray, per_batch: int | None) -> Iterator[torch.Tensor]:
        """:meth:`windows`, at most ``per_batch`` chunks at a time (all at once for None): with the
        robustness options, each batch is computed from its own spans, so memory does not grow with the
        recording; the notebook's input is one spectrogram of the whole recording (4 bytes a sample)."""
        n_chunks = max(int(window_count(len(samples), self.nperseg, self.noverlap)), 0) // self.chunk_size
        if n_chunks == 0:
            raise _too_short(samples, self.sampling_rate_hz, self.min_samples, "chunk")
        if self.from_samples:
            starts = torch.from_numpy(self.window_starts(len(samples)))
            for spans in sample_windows(torch.from_numpy(np.ascontiguousarray(samples)), starts,
                                        self.window_samples, per_batch or len(starts)):
                yield self.from_sample_windows(spans.to(torch.float32))
            return
        yield from torch.split(self._notebook_windows(samples, n_chunks), per_batch or n_chunks)

    def _notebook_windows(self, samples: np.ndarray, n_chunks: int) -> torch.Tensor:
        # float32 as in training; windows inside the recording do not depend on any padding. The samples
        # passed Preprocessing's checks (at most readers.PEAK_LIMIT): their power stays within float32.
        import scipy.signal  # here: the networks trained on chunks never call it (scipy.signal takes ~1 s to import)

        _, _, sxx = scipy.signal.spectrogram(samples.astype(np.float32), scaling=self.scaling,
                                             nperseg=self.nperseg, noverlap=self.noverlap)
        spectra = np.ascontiguousarray(sxx.T[: n_chunks * self.chunk_size])
        self.normalisation.apply_(spectra)
        return torch.from_numpy(spectra).view(n_chunks, self.chunk_size, -1)

    def to_dict(self) -> dict:
        data = {"kind": self.kind, **{k: v for k, v in asdict(self).items() if k not in ("normalisation", "conditioning")},
                "normalisation": self.normalisation.to_dict()}
        if self.log_floor is None:
            del data["log_floor"]
        return _with_conditioning(data, self.conditioning)

    @classmethod
    def from_dict(cls, data: dict) -> "SpectrogramChunks":
        fields = {k: v for k, v in data.items() if k != "kind"}
        return cls(**{**fields, "conditioning": Conditioning.from_dict(fields.get("conditioning")),
                      "normalisation": Normalisation.from_dict(fields["normalisation"])})

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
        return self.from_sample_windows(cut(flat, starts, self.crop_samples))

    def windows(self, samples: np.ndarray) -> torch.Tensor:
        """The crops of one recording (float64 samples at ``sampling_rate_hz``)."""
        return torch.cat(list(self.window_batches(samples, None)))

    def window_batches(self, samples: np.ndarray, per_batch: int | None) -> Iterator[torch.Tensor]:
        """:meth:`windows`, at most ``per_batch`` crops at a time (all at once for None): memory that
        does not grow with the recording."""
        if len(samples) < self.crop_samples:
            raise _too_short(samples, self.sampling_rate_hz, self.crop_samples, "crop")
        starts = torch.from_numpy(self.crop_starts(len(samples)))
        flat = torch.from_numpy(np.ascontiguousarray(samples))
        for begin in range(0, len(starts), per_batch or len(starts)):
            yield self.gather(flat, starts[begin : begin + (per_batch or len(starts))])

    def to_dict(self) -> dict:
        return _with_conditioning({"kind": self.kind, "sampling_rate_hz": self.sampling_rate_hz,
                                   "crop_samples": self.crop_samples}, self.conditioning)

    @classmethod
    def from_dict(cls, data: dict) -> "RawCrops":
        fields = {k: v for k, v in data.items() if k != "kind"}
        return cls(**{**fields, "conditioning": Conditioning.from_dict(fields.get("conditioning"))})


Featurizer = SpectrogramChunks | RawCrops
# the featurizers by the ``kind`` that model.json names; each builds itself from its dict
FEATURIZERS: dict[str, type] = {f.kind: f for f in (SpectrogramChunks, RawCrops)}


def featurizer_from_dict(data: dict) -> Featurizer:
    if data.get("kind") not in FEATURIZERS:
        raise ValueError(f"unknown featurizer kind {data.get('kind')!r}; expected one of {sorted(FEATURIZERS)}")
    return FEATURIZERS[data["kind"]].from_dict(data)
