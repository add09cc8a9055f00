"""Spectrograms of padded recordings, normalised per frequency, as the notebook computes them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def window_count(n_samples: np.ndarray | int, nperseg: int, noverlap: int) -> np.ndarray | int:
    """Windows per recording, by the notebook's formula ``(length - nperseg) // (nperseg - noverlap)``.

    It counts one window fewer than fit in the recording (scipy makes ``... + 1``); we keep the
    notebook's count so that chunk counts and figures match it.
    """
    return (n_samples - nperseg) // (nperseg - noverlap)


def compute_spectra(
    signals: np.ndarray, nperseg: int, noverlap: int, scaling: str = "spectrum", batch_size: int = 256
) -> np.ndarray:
    """Spectrograms of ``signals`` (n, samples) as float32 (n, windows, bins), C-contiguous.

    scipy is called on ``batch_size`` recordings at a time, at a fraction of the memory and time of
    one call, because scipy's intermediate arrays for 5,000+ recordings no longer fit the CPU
    caches. The values equal one call's to float32 rounding; on some CPUs bit for bit, but that is
    the kernels' business, so ``batch_size`` is a DVC param of the stage.
    """
    import scipy.signal  # here, as below: the stages that only cut windows skip its import (about a second)

    n = signals.shape[0]
    n_windows = (signals.shape[1] - noverlap) // (nperseg - noverlap)
    out = np.empty((n, n_windows, nperseg // 2 + 1), dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = signals[start : start + batch_size].astype(np.float32)
        _, _, sxx = scipy.signal.spectrogram(batch, scaling=scaling, nperseg=nperseg, noverlap=noverlap)
        out[start : start + batch_size] = sxx.transpose(0, 2, 1)
    return out


@dataclass(frozen=True)
class Normalisation:
    """Per-frequency statistics: ``(spectrum - mean) / std`` gives the network's input."""

    mean: np.ndarray  # (bins,) float64
    std: np.ndarray  # (bins,) float64

    def apply_(self, spectra: np.ndarray) -> np.ndarray:
        """Normalise float32 ``spectra`` (n, windows, bins) in place and return it."""
        spectra -= self.mean.astype(spectra.dtype)
        spectra /= self.std.astype(spectra.dtype)
        return spectra

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> "Normalisation":
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64))


def fit_normalise_(spectra: np.ndarray, stats_dtype: str = "float32") -> Normalisation:
    """Normalise each frequency of ``spectra`` over all recordings and windows, in place.

    ``stats_dtype="float32"`` accumulates exactly as the notebook's numpy calls on its
    (n, bins, windows) view, bit for bit, so the data card reproduces its figures;
    ``"float64"`` gives the exact mean and standard deviation.
    """
    view = spectra.transpose(0, 2, 1)  # the notebook's layout: reduce over recordings and windows
    if stats_dtype == "float32":
        mean = np.mean(view, axis=(0, 2), keepdims=True)
        view -= mean
        std = np.std(view, axis=(0, 2), keepdims=True)
        view /= std
    elif stats_dtype == "float64":
        mean = np.mean(view, axis=(0, 2), keepdims=True, dtype=np.float64)
        view -= mean.astype(np.float32)
        # after exact centring, the float64 second moment is the variance
        std = np.sqrt(np.mean(np.square(view, dtype=np.float64), axis=(0, 2), keepdims=True))
        view /= std.astype(np.float32)
    else:
        raise ValueError(f"stats_dtype must be 'float32' or 'float64', got {stats_dtype!r}")
    if not np.all(std > 0):
        raise ValueError("a frequency bin has zero variance over all recordings; cannot normalise")
    return Normalisation(mean.ravel().astype(np.float64), std.ravel().astype(np.float64))


_TUKEY_WINDOWS: dict[int, torch.Tensor] = {}


def spectrogram_of_windows(x: torch.Tensor, nperseg: int, noverlap: int, scaling: str) -> torch.Tensor:
    """``scipy.signal.spectrogram``'s defaults (Tukey 0.25 window, constant detrend, one-sided) of each
    row of ``x`` (rows, samples) in torch, batched on any device: (rows, segments, nperseg // 2 + 1).
    Scaling 'spectrum' only (params.yaml refuses conditioned spectra with another)."""
    if scaling != "spectrum":
        raise ValueError(f"spectrogram_of_windows: only scaling 'spectrum' is implemented, got {scaling!r}")
    if nperseg not in _TUKEY_WINDOWS:
        import scipy.signal

        _TUKEY_WINDOWS[nperseg] = torch.from_numpy(scipy.signal.get_window(("tukey", 0.25), nperseg))
    window = _TUKEY_WINDOWS[nperseg].to(x.device, x.dtype)
    segments = x.unfold(-1, nperseg, nperseg - noverlap)
    segments = (segments - segments.mean(dim=-1, keepdim=True)) * window
    power = torch.fft.rfft(segments, dim=-1).abs().square()
    power = power / window.sum() ** 2
    last = -1 if nperseg % 2 == 0 else None  # one-sided: every bin but DC (and Nyquist) counted twice
    power[..., 1:last] *= 2
    return power
