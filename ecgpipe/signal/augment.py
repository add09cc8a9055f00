"""Signal augmentation for training: crops made to look as if other ECG devices had recorded them.

An :class:`Augmentation` (``augment`` of an experiment in ``params.yaml``) changes a batch of raw
crops (crops, samples) in CinC units, on the device the batch is on, with one set of tensor
operations for the whole batch (no loop over crops). Each transform is applied to each crop with
``probability``, independently; a transform left at null is off:

- ``gain``: multiply by a factor drawn log-uniformly from [low, high];
- ``offset``: add a constant drawn uniformly from [-offset, offset] units (1/1000 mV);
- ``baseline_mv``: add a baseline wander, a sinusoid of up to this amplitude with a frequency
  from ``baseline_hz`` and a random phase;
- ``noise_snr_db``: add white noise at a signal-to-noise ratio drawn uniformly from [low, high] dB
  (relative to the crop's own variance);
- ``mains_mv``: add mains hum of up to this amplitude at 50 or 60 Hz, random phase;
- ``stretch``: resample by a factor from [1 - stretch, 1 + stretch] (linear interpolation): heart
  rate and sampling-rate jitter. The loader then draws ``input_samples`` per crop;
- ``dropout_s``: a burst of up to this many seconds set to zero (a lead coming loose).

Every random number comes from the ``torch.Generator`` (on the CPU) the training loop passes to
the loader, so a seed gives the same augmented batches on any device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ecgpipe.core.errors import fail_param
from ecgpipe.core.units import ADC_PER_MV

if TYPE_CHECKING:  # imported where crops are augmented: params.py (every stage) reads this class's fields
    import torch

MAINS_HZ = (50.0, 60.0)


def _check_range(key: str, value: list[float] | None, lowest: float, what: str) -> None:
    if value is not None and not (len(value) == 2 and lowest <= value[0] <= value[1]):
        fail_param(key, f"null or [low, high] with {lowest:g} <= low <= high ({what})", value)


@dataclass(frozen=True)
class Augmentation:
    probability: float = 0.5
    gain: list[float] | None = None
    offset: float | None = None
    baseline_mv: float | None = None
    baseline_hz: list[float] = field(default_factory=lambda: [0.05, 0.5])
    noise_snr_db: list[float] | None = None
    mains_mv: float | None = None
    stretch: float | None = None
    dropout_s: float | None = None

    def validate(self, key: str) -> None:
        if not 0 < self.probability <= 1:
            fail_param(f"{key}.probability", "a probability above 0 and at most 1", self.probability)
        _check_range(f"{key}.gain", self.gain, 1e-6, "factors")
        _check_range(f"{key}.baseline_hz", self.baseline_hz, 0.0, "Hz")
        _check_range(f"{key}.noise_snr_db", self.noise_snr_db, -math.inf, "dB")
        for name in ("offset", "baseline_mv", "mains_mv", "dropout_s"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                fail_param(f"{key}.{name}", "null or a number >= 0", value)
        if self.stretch is not None and not 0 <= self.stretch < 0.5:
            fail_param(f"{key}.stretch", "null or a fraction from 0 to below 0.5", self.stretch)

    def input_samples(self, span: int) -> int:
        """Samples to draw per crop for an output of ``span``: more when stretching."""
        return span if not self.stretch else math.ceil((span - 1) * (1 + self.stretch)) + 2

    def apply(self, x: torch.Tensor, generator: torch.Generator, fs: float, span: int) -> torch.Tensor:
        """Augmented crops (n, span), float32, from crops ``x`` (n, input_samples(span)) in CinC units."""
        import torch

        n, device = len(x), x.device
        # all scalar draws at once, in a fixed order: columns 0-6 decide whether each transform applies
        # (with ``probability``; 7 is unused), columns 8-15 draw the amounts of stretch, gain, dropout,
        # offset and baseline; mains and noise draw theirs from a second block (v) below
        u = torch.rand(n, 16, generator=generator, dtype=torch.float64).to(device)
        applied = u[:, :8] < self.probability
        x = x.to(torch.float32)
        t = torch.arange(span, device=device, dtype=torch.float64)

        if self.stretch:
            factor = torch.where(applied[:, 0], 1 + self.stretch * (2 * u[:, 8] - 1), 1.0)
            position = t[None, :] * factor[:, None]
            left = position.floor().long()
            weight = (position - left).to(torch.float32)
            x = torch.lerp(x.gather(1, left), x.gather(1, left + 1), weight)
        else:
            x = x[:, :span]
        if self.gain:
            low, high = map(math.log, self.gain)
            factor = torch.where(applied[:, 1], torch.exp(low + (high - low) * u[:, 9]), 1.0)
            x = x * factor[:, None].to(torch.float32)
        if self.dropout_s:
            length = torch.where(applied[:, 2], u[:, 10] * min(self.dropout_s * fs, span), 0.0)
            start = u[:, 11] * (span - length)
            burst = (t[None, :] >= start[:, None]) & (t[None, :] < (start + length)[:, None])
            x = x.masked_fill(burst, 0.0)
        power = x.var(dim=1, keepdim=True)  # the crop's signal, before anything is added to it
        if self.offset:
            x = x + torch.where(applied[:, 3], self.offset * (2 * u[:, 12] - 1), 0.0)[:, None].to(torch.float32)
        seconds = t / fs
        if self.baseline_mv:
            low, high = self.baseline_hz
            amplitude = torch.where(applied[:, 4], u[:, 13] * self.baseline_mv * ADC_PER_MV, 0.0)
            x = x + self._sinusoid(amplitude, low + (high - low) * u[:, 14], u[:, 15], seconds)
        # the remaining draws come after the first 16 columns, in a second block
        v = torch.rand(n, 4, generator=generator, dtype=torch.float64).to(device)
        if self.mains_mv:
            amplitude = torch.where(applied[:, 5], v[:, 0] * self.mains_mv * ADC_PER_MV, 0.0)
            hz = torch.where(v[:, 1] < 0.5, MAINS_HZ[0], MAINS_HZ[1])
            x = x + self._sinusoid(amplitude, hz, v[:, 2], seconds)
        if self.noise_snr_db:
            low, high = self.noise_snr_db
            snr_db = low + (high - low) * v[:, 3]
            std = torch.where(applied[:, 6], torch.sqrt(power[:, 0].to(torch.float64) / 10 ** (snr_db / 10)), 0.0)
            noise = torch.randn(n, span, generator=generator, dtype=torch.float32).to(device)
            x = x + noise * std[:, None].to(torch.float32)
        return x

    @staticmethod
    def _sinusoid(amplitude: torch.Tensor, hz: torch.Tensor, phase01: torch.Tensor, seconds: torch.Tensor):
        angle = 2 * math.pi * (hz[:, None] * seconds[None, :] + phase01[:, None])
        return (amplitude[:, None] * angle.sin()).float()
