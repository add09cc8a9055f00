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

import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
import scipy.signal

from ecgpipe.core.units import ADC_PER_MV

FIELDS = {
    "gain": ("factor",),
    "offset": ("units",),
    "baseline": ("hz", "mv"),
    "white_noise": ("snr_db",),
    "mains": ("hz", "mv"),
    "resample": ("hz",),
    "bandpass": ("low_hz", "high_hz"),
}
BANDPASS_ORDER = 2
RESAMPLE_HZ = (50, 2000)  # the rates a resample shift may ask for


@dataclass(frozen=True)
class Shift:
    kind: Literal["gain", "offset", "baseline", "white_noise", "mains", "resample", "bandpass"]
    factor: float | None = None
    units: float | None = None
    hz: float | None = None
    mv: float | None = None
    snr_db: float | None = None
    low_hz: float | None = None
    high_hz: float | None = None

    def validate(self, key: str) -> None:
        from ecgpipe.core.errors import ParamsError
        from ecgpipe.core.units import SAMPLING_RATE_HZ

        needed = FIELDS[self.kind]
        for name in ("factor", "units", "hz", "mv", "snr_db", "low_hz", "high_hz"):
            value = getattr(self, name)
            if name in needed and value is None:
                raise ParamsError(f"params: {key}.{name}: missing (a {self.kind} shift needs {', '.join(needed)})")
            if name not in needed and value is not None:
                raise ParamsError(f"params: {key}.{name}: expected no {name} for a {self.kind} shift "
                                  f"(it takes {', '.join(needed)}), got {value!r}")
        positive = [n for n in ("factor", "hz", "low_hz", "high_hz") if n in needed]
        for name in positive:
            if not getattr(self, name) > 0:
                raise ParamsError(f"params: {key}.{name}: expected a positive number, got {getattr(self, name)!r}")
        if self.kind == "bandpass" and not self.low_hz < self.high_hz:
            raise ParamsError(f"params: {key}.high_hz: expected above low_hz ({self.low_hz:g}), got {self.high_hz!r}")
        nyquist = SAMPLING_RATE_HZ / 2  # shifts act on the recordings as read, at the archive's rate
        for name in ("high_hz", "low_hz") if self.kind == "bandpass" else ("hz",) if self.kind in ("baseline", "mains") else ():
            if not getattr(self, name) < nyquist:
                raise ParamsError(f"params: {key}.{name}: expected below the Nyquist frequency of the {SAMPLING_RATE_HZ:g} "
                                  f"Hz recordings ({nyquist:g} Hz), got {getattr(self, name)!r}")
        if self.kind == "resample" and not RESAMPLE_HZ[0] <= self.hz <= RESAMPLE_HZ[1]:
            raise ParamsError(f"params: {key}.hz: expected a rate from {RESAMPLE_HZ[0]} to {RESAMPLE_HZ[1]} Hz (ECG "
                              f"devices record at 100-1,000 Hz; each recording is resampled in memory), got {self.hz!r}")

    def apply(self, samples: np.ndarray, fs: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """(shifted samples as float64, their sampling rate) of one recording in CinC units."""
        x = np.asarray(samples, dtype=np.float64)
        t = np.arange(len(x)) / fs
        if self.kind == "gain":
            return x * self.factor, fs
        if self.kind == "offset":
            return x + self.units, fs
        if self.kind in ("baseline", "mains"):
            phase = rng.uniform(0, 2 * np.pi)
            return x + self.mv * ADC_PER_MV * np.sin(2 * np.pi * self.hz * t + phase), fs
        if self.kind == "white_noise":
            noise_std = np.sqrt(np.var(x) / 10 ** (self.snr_db / 10))
            return x + rng.normal(0.0, noise_std, size=len(x)), fs
        if self.kind == "resample":
            ratio = Fraction(self.hz / fs).limit_denominator(1000)
            return scipy.signal.resample_poly(x, ratio.numerator, ratio.denominator), float(self.hz)
        if self.kind == "bandpass":
            if self.high_hz >= fs / 2:
                raise ValueError(f"bandpass shift: high_hz {self.high_hz:g} is not below the Nyquist frequency {fs / 2:g}")
            sos = scipy.signal.butter(BANDPASS_ORDER, [self.low_hz, self.high_hz], btype="bandpass", fs=fs, output="sos")
            return scipy.signal.sosfiltfilt(sos, x), fs
        raise ValueError(f"unknown shift kind {self.kind!r}; expected one of {sorted(FIELDS)}")


def shift_rng(seed: int, name: str, row: int) -> np.random.Generator:
    """The random numbers of shift ``name`` on the recording of row ``row``."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), row])
