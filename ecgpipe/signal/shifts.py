"""Device shifts: the validation recordings as other ECG devices might have recorded them.

The evaluate stage scores every model again under each shift of ``evaluate.shifts`` in
``params.yaml``, one at a time, through the same path as ``ecgpipe predict``: a shifted recording
is a :class:`~ecgpipe.inference.readers.Signal` (samples in CinC units, 1/1000 mV, and a sampling
rate), so a resampled one goes through predict's resampling back to the training rate.

Kinds, and the fields each needs:
- ``gain`` (``factor``): amplitude times factor (electrode placement, amplifier gain);
- ``offset`` (``units``): a constant added (an export that is not zero-centred);
- ``baseline`` (``hz``, ``mv``): a sinusoidal baseline wander, random phase;
- ``white_noise`` (``snr_db``): Gaussian noise at this signal-to-noise ratio (the recording's
  variance over the noise's);
- ``mains`` (``hz``, ``mv``): mains hum, random phase;
- ``resample`` (``hz``): resampled to this rate (``scipy.signal.resample_poly``);
- ``bandpass`` (``low_hz``, ``high_hz``): a band-limited copy, zero-phase Butterworth of order 2 per edge.

Random parts (phases, noise) are seeded per shift and per recording from ``evaluate.shift_seed``,
the shift's name and the recording's row, so a figure does not depend on which other recordings
or shifts are scored.
"""
from __future__ import annotations

import typing
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from ecgpipe.core.errors import fail_param
from ecgpipe.core.units import ADC_PER_MV, SAMPLING_RATE_HZ

BANDPASS_ORDER = 2
RESAMPLE_HZ = (50, 2000)  # the rates a resample shift may ask for
NYQUIST_HZ = SAMPLING_RATE_HZ / 2  # shifts act on the recordings as read, at the archive's rate

# The shift kinds, by name: one frozen dataclass each, with the fields it needs, ``check(key)`` for
# their values and ``apply``. params.yaml's ``evaluate.shifts`` entries are a union on ``kind``.
SHIFT_KINDS: dict[str, type] = {}


def register_shift(cls: type) -> type:
    (kind,) = typing.get_args(typing.get_type_hints(cls)["kind"])
    SHIFT_KINDS[kind] = cls
    return cls


def _positive(key: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            fail_param(f"{key}.{name}", "a positive number", value)


def _below_nyquist(key: str, **values: float) -> None:
    for name, value in values.items():
        if not value < NYQUIST_HZ:
            fail_param(f"{key}.{name}", f"below the Nyquist frequency of the {SAMPLING_RATE_HZ:g} Hz recordings "
                       f"({NYQUIST_HZ:g} Hz)", value)


def _as_samples(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float64)


@register_shift
@dataclass(frozen=True)
class GainShift:
    """Amplitude times ``factor`` (electrode placement, amplifier gain)."""

    kind: Literal["gain"]
    factor: float

    def validate(self, key: str) -> None:
        _positive(key, factor=self.factor)

    def apply(self, samples: np.ndarray, fs: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        return _as_samples(samples) * self.factor, fs


@register_shift
@dataclass(frozen=True)
class OffsetShift:
    """A constant of ``units`` (1/1000 mV) added: an export that is not zero-centred."""

    kind: Literal["offset"]
    units: float

    def validate(self, key: str) -> None:
        pass

    def apply(self, samples: np.ndarray, fs: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        return _as_samples(samples) + self.units, fs


def _sinusoid(samples: np.ndarray, fs: float, hz: float, mv: float, rng: np.random.Generator) -> np.ndarray:
    x = _as_samples(samples)
    t = np.arange(len(x)) / fs
    phase = rng.uniform(0, 2 * np.pi)
    return x + mv * ADC_PER_MV * np.sin(2 * np.pi * hz * t + phase)


@register_shift
@dataclass(frozen=True)
class BaselineShift:
    """A sinusoidal baseline wander of ``hz`` and ``mv``, random phase."""

    kind: Literal["baseline"]
    hz: float
    mv: float

    def validate(self, key: str) -> None:
        _positive(key, hz=self.hz)
        _below_nyquist(key, hz=self.hz)

    def apply(self, samples: np.ndarray, fs: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        return _sinusoid(samples, fs, self.hz, self.mv, rng), fs


@register_shift
@dataclass(frozen=True)
class MainsShift(BaselineShift):
    """Mains hum of ``hz`` and ``mv``, random phase: a baseline sinusoid at 50 or 60 Hz, its own kind
    so that params.yaml says which it means."""

    kind: Literal["mains"]


@register_shift
@dataclass(frozen=True)
class WhiteNoiseShift:
    """Gaussian noise at ``snr_db`` (the recording's variance over the noise's)."""

    kind: Literal["white_noise"]
    snr_db: float

    def validate(self, key: str) -> None:
        pass

    def apply(self, samples: np.ndarray, fs: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        x = _as_samples(samples)
        noise_std = np.sqrt(np.var(x) / 10 ** (self.snr_db / 10))
        return x + rng.normal(0.0, noise_std, size=len(x)), fs


@register_shift
@dataclass(frozen=True)
class ResampleShift:
    """Resampled to ``hz`` (``scipy.signal.resample_poly``)."""

    kind: Literal["resample"]
    hz: float

    def validate(self, key: str) -> None:
        _positive(key, hz=self.hz)
        if not RESAMPLE_HZ[0] <= self.hz <= RESAMPLE_HZ[1]:
            fail_param(f"{key}.hz", f"a rate from {RESAMPLE_HZ[0]} to {RESAMPLE_HZ[1]} Hz (ECG devices record at "
                       "100-1,000 Hz; each recording is resampled in memory)", self.hz)

    def apply(self, samples: np.ndarray, fs: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        import scipy.signal  # here, not at the top: params.py imports this module, and scipy.signal
        # takes about a second to import, in every stage and command

        ratio = Fraction(self.hz / fs).limit_denominator(1000)
        return scipy.signal.resample_poly(_as_samples(samples), ratio.numerator, ratio.denominator), float(self.hz)


@register_shift
@dataclass(frozen=True)
class BandpassShift:
    """A band-limited copy: zero-phase Butterworth of order 2 per edge, ``low_hz`` to ``high_hz``."""

    kind: Literal["bandpass"]
    low_hz: float
    high_hz: float

    def validate(self, key: str) -> None:
        _positive(key, low_hz=self.low_hz, high_hz=self.high_hz)
        if not self.low_hz < self.high_hz:
            fail_param(f"{key}.high_hz", f"above low_hz ({self.low_hz:g})", self.high_hz)
        _below_nyquist(key, high_hz=self.high_hz, low_hz=self.low_hz)

    def apply(self, samples: np.ndarray, fs: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        if self.high_hz >= fs / 2:
            raise ValueError(f"bandpass shift: high_hz {self.high_hz:g} is not below the Nyquist frequency {fs / 2:g}")
        import scipy.signal

        sos = scipy.signal.butter(BANDPASS_ORDER, [self.low_hz, self.high_hz], btype="bandpass", fs=fs, output="sos")
        return scipy.signal.sosfiltfilt(sos, _as_samples(samples)), fs


Shift = GainShift | OffsetShift | BaselineShift | MainsShift | WhiteNoiseShift | ResampleShift | BandpassShift


def shift_rng(seed: int, name: str, row: int) -> np.random.Generator:
    """The random numbers of shift ``name`` on the recording of row ``row``."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), row])
