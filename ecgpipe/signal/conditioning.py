"""Signal conditioning: what a featurizer does to each window of raw signal before it featurizes it.

Recordings from other ECG devices differ from CinC's AliveCor recordings in DC offset, baseline
wander, amplitude (gain, lead placement) and bandwidth. A :class:`Conditioning` removes those
differences from every window a network sees, in training and in scoring alike:

- ``highpass_hz``: a zero-phase high-pass (Butterworth magnitude, squared as ``filtfilt`` would),
  which removes the DC offset exactly and attenuates baseline wander;
- ``lowpass_hz``: with it, a band-pass (mains hum, muscle noise and the bandwidth of the device);
- ``amplitude: mad``: divide by the window's robust scale, 1.4826 x the median absolute deviation,
  which undoes any gain.

It acts on whole windows (a spectrogram chunk's span of samples, a raw crop), batched as one
(windows, samples) tensor on any device: the training loader conditions augmented crops exactly as
scoring conditions the crops of a recording, so the two cannot drift apart. Filtering is done in
the frequency domain over the window extended at both ends by odd reflection (as ``filtfilt``
pads), so a constant stays a constant and is removed, and the edges ring little.
All off (the default) is the identity: the notebook's input, untouched.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ecgpipe.core.errors import fail_param

if TYPE_CHECKING:  # imported where windows are filtered: params.py (every stage) reads this class's fields
    import torch

MAD_TO_STD = 1.4826  # the MAD of a normal distribution times this is its standard deviation
MIN_SCALE = 1e-3  # a flat window (scale 0) is divided by this instead: it stays flat, not NaN


@dataclass(frozen=True)
class Conditioning:
    highpass_hz: float | None = None
    lowpass_hz: float | None = None
    filter_order: int = 2  # of each Butterworth edge; zero-phase doubles it, as filtfilt does
    amplitude: Literal["none", "mad"] = "none"

    @property
    def is_identity(self) -> bool:
        return self.highpass_hz is None and self.lowpass_hz is None and self.amplitude == "none"

    def validate(self, key: str, fs: float | None = None) -> None:
        for name in ("highpass_hz", "lowpass_hz"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                fail_param(f"{key}.{name}", "null or a positive frequency in Hz", value)
        if self.highpass_hz is not None and self.lowpass_hz is not None and self.lowpass_hz <= self.highpass_hz:
            fail_param(f"{key}.lowpass_hz", f"above highpass_hz ({self.highpass_hz:g} Hz)", self.lowpass_hz)
        if fs is not None and self.lowpass_hz is not None and self.lowpass_hz >= fs / 2:
            fail_param(f"{key}.lowpass_hz", f"below the Nyquist frequency ({fs / 2:g} Hz)", self.lowpass_hz)
        if not 1 <= self.filter_order <= 8:
            fail_param(f"{key}.filter_order", "an order from 1 to 8", self.filter_order)

    def response(self, freqs_hz: np.ndarray | torch.Tensor):
        """The filter's zero-phase gain at ``freqs_hz``: |H|^2 of the Butterworth edges (1 without them)."""
        gain = freqs_hz * 0 + 1.0
        n2 = 2 * self.filter_order
        if self.highpass_hz is not None:
            ratio = (freqs_hz / self.highpass_hz)
            gain = gain * ratio**n2 / (1 + ratio**n2)  # 1 / (1 + (fc/f)^2n), also defined at f = 0
        if self.lowpass_hz is not None:
            gain = gain / (1 + (freqs_hz / self.lowpass_hz) ** n2)
        return gain

    def filter(self, x: torch.Tensor, fs: float) -> torch.Tensor:
        """Zero-phase filtering of each row of ``x`` (windows, samples)."""
        import torch

        if self.highpass_hz is None and self.lowpass_hz is None:
            return x
        n = x.shape[-1]
        pad = n - 1  # the most an odd reflection can give: a 0.5 Hz edge rings for about 2 s
        if pad > 0:
            head = 2 * x[:, :1] - x[:, 1 : pad + 1].flip(-1)
            tail = 2 * x[:, -1:] - x[:, -pad - 1 : -1].flip(-1)
            x = torch.cat([head, x, tail], dim=-1)
        length = x.shape[-1]
        freqs = torch.fft.rfftfreq(length, d=1.0 / fs, device=x.device, dtype=torch.float64)
        gain = self.response(freqs).to(x.dtype)
        filtered = torch.fft.irfft(torch.fft.rfft(x, dim=-1) * gain, n=length, dim=-1)
        return filtered[:, pad : pad + n]

    def apply(self, x: torch.Tensor, fs: float) -> torch.Tensor:
        """The conditioned windows: filtered, then divided by their robust scale (``amplitude: mad``)."""
        if self.is_identity:
            return x
        x = self.filter(x.float() if not x.is_floating_point() else x, fs)
        if self.amplitude == "mad":
            centred = x - x.median(dim=-1, keepdim=True).values
            scale = MAD_TO_STD * centred.abs().median(dim=-1, keepdim=True).values
            x = centred / scale.clamp_min(MIN_SCALE)
        return x

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Conditioning":
        return cls(**(data or {}))
