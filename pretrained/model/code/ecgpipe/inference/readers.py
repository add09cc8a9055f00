"""Recording files to a :class:`Signal` (samples in CinC units, 1/1000 mV, and a rate), and the checks
of a signal that no featurizer could score (flat, wrong units, a rate outside any ECG's)."""
from __future__ import annotations

import math
import mmap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgpipe.core.errors import PredictError, RecordError
from ecgpipe.core.units import ADC_PER_MV
from ecgpipe.data.records import read_signal

# The input a predictor accepts (the serving contract, checked before any resampling): sampling rates
# of ECG devices (50 Hz to 10 kHz; resampling a rate outside them multiplies or divides the samples
# by over 30), and recordings of at most a day (a Holter recording).
MIN_FS_HZ, MAX_FS_HZ = 50.0, 10_000.0
MAX_DURATION_S = 24 * 3600.0


def _as_float(value) -> float:
    """``value`` as a float; NaN (which every check below rejects) if it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class InputLimits:
    """What a predictor accepts, checked before any resampling (the serving contract)."""

    min_fs_hz: float = MIN_FS_HZ
    max_fs_hz: float = MAX_FS_HZ
    max_duration_s: float = MAX_DURATION_S

    def check_rate(self, fs, what: str = "sampling rate") -> float:
        """``fs`` as a float, or a PredictError naming ``what`` and the accepted range."""
        value = _as_float(fs)
        if not self.min_fs_hz <= value <= self.max_fs_hz:  # also false for NaN
            raise PredictError(f"{what}: expected a sampling rate in Hz from {self.min_fs_hz:g} to "
                               f"{self.max_fs_hz:g}, got {fs!r}")
        return value

    def check(self, signal: "Signal") -> None:
        """A PredictError naming the bound that ``signal`` breaks."""
        fs = self.check_rate(signal.fs)
        n_samples = int(np.size(signal.samples))
        if n_samples > self.max_duration_s * fs:
            raise PredictError(f"the recording lasts {n_samples / fs / 3600:.1f} h ({n_samples:,} samples at {fs:g} "
                               f"Hz); expected at most {self.max_duration_s / 3600:g} h: split it into parts")

    def describe(self) -> str:
        return (f"one recording per row, sampled at {self.min_fs_hz:g} Hz to {self.max_fs_hz:g} Hz, "
                f"lasting at most {self.max_duration_s / 3600:g} h")


def check_sampling_rate(fs, what: str = "--fs") -> float:
    """``fs`` as a float within the default limits, or a PredictError naming ``what``."""
    return InputLimits().check_rate(fs, what)


def check_gain(gain: float, what: str = "--gain") -> float:
    """``gain`` (units per mV) as a positive finite float, or a PredictError naming ``what``."""
    value = _as_float(gain)
    if not (math.isfinite(value) and value > 0):
        raise PredictError(f"{what}: expected a positive number of units per mV, got {gain!r}")
    return value


@dataclass
class Signal:
    samples: np.ndarray  # 1-D; times ``scale``, in CinC units (1/1000 mV)
    fs: float
    lead: str = ""  # the lead it was read from, where the file has several (WFDB)
    # kept apart from ``samples`` so that a memory-mapped .npy file is read a block at a time, never
    # copied whole (Preprocessing applies it to each block)
    scale: float = 1.0

    def blocks(self, size: int):
        """(start, float64 samples in CinC units) for consecutive blocks of at most ``size`` samples; the
        pages of a memory-mapped file are let go after each block, so a file larger than memory streams."""
        for start in range(0, len(self.samples), size):
            block = np.asarray(self.samples[start: start + size], dtype=np.float64)
            yield start, (block * self.scale if self.scale != 1.0 else block)  # read only: no copy
            _release_pages(self.samples)


def _release_pages(samples: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process's resident memory (they are the file's,
    read again if touched): without it, reading a 7 GB file once leaves 7 GB resident."""
    base = samples
    while base is not None and not isinstance(getattr(base, "_mmap", None), mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and hasattr(mmap, "MADV_DONTNEED"):
        base._mmap.madvise(mmap.MADV_DONTNEED)


# The median absolute sample of every CinC recording lies between 5 and 668 units (1/1000 mV);
# outside 1 µV to 50 mV, no ECG does: the units are wrong (a --gain off by 1,000), not the heart.
AMPLITUDE_RANGE = (1.0, 50_000.0)
# No sample of an ECG reaches 1 V (a saturated 16-bit ADC at 200 units/mV is 164 mV): a larger one is a
# corrupt sample or wrong units, and one spike alone would move the network's output while the median
# above stays normal.
PEAK_LIMIT = 1_000_000.0


# The median's check reads at most this many samples, evenly spaced (every sample of any recording up
# to 3.9 hours at 300 Hz): an estimate that bounds memory for a day at 10 kHz, and the check only
# looks for units off by 1,000.
MEDIAN_SAMPLES = 1 << 22


class AmplitudeCheck:
    """The amplitude checks of a recording given in consecutive blocks: finite samples (at once),
    then flat, median and peak (:meth:`check`, once every block was added)."""

    def __init__(self, n_samples: int):
        self.stride = max(1, -(-n_samples // MEDIAN_SAMPLES))
        self.picked: list[np.ndarray] = []
        self.low, self.high = np.float32(np.inf), np.float32(-np.inf)
        self.first = None
        self.peak, self.peak_at, self.peak_value = -1.0, 0, 0.0

    def add(self, block: np.ndarray, start: int) -> None:
        if not np.isfinite(block).all():
            raise PredictError("the recording has non-finite samples (NaN or infinity)")
        if self.first is None:
            self.first = float(block[0])
        # flat on the float32 values the network sees: int64 samples near 9.2e18 differ in float64, not
        # there; values past float32's range become inf quietly, and the median or peak names them
        with np.errstate(over="ignore", invalid="ignore"):
            as_float32 = block.astype(np.float32)
        self.low, self.high = min(self.low, as_float32.min()), max(self.high, as_float32.max())
        magnitude = np.abs(block)
        self.picked.append(magnitude[(-start) % self.stride:: self.stride].copy())  # not a view: it would keep the block
        at = int(np.argmax(magnitude))
        if magnitude[at] > self.peak:  # strictly: the first of equal peaks, as one argmax over all
            self.peak, self.peak_at, self.peak_value = float(magnitude[at]), start + at, float(block[at])

    def check(self) -> None:
        """A PredictError for a flat recording, an amplitude no ECG has, or a sample no ECG reaches
        (flat first: it says more than a median of 0)."""
        with np.errstate(over="ignore", invalid="ignore"):
            if self.high - self.low == 0:
                raise PredictError(f"the recording is flat (every sample is {self.first:g}, as float32): no signal "
                                   "to classify")
        median = float(np.median(np.concatenate(self.picked)))
        low, high = AMPLITUDE_RANGE
        if not low <= median <= high:
            raise PredictError(f"the recording's median absolute value is {median:.3g} (in 1/1000 mV), outside any "
                               f"ECG ({low:g} µV to {high / 1000:g} mV); check the signal's units (--gain)")
        if self.peak > PEAK_LIMIT:
            raise PredictError(f"sample {self.peak_at} is {self.peak_value:.3g} (in 1/1000 mV), beyond any ECG (at most "
                               f"{PEAK_LIMIT / 1e6:g} V): a corrupt sample or wrong units (--gain)")


def _lead_index(path: Path, names: list[str], lead: str | None) -> int:
    """The index of the lead to classify: the only one, or the one ``lead`` names (name or index)."""
    if lead is None:
        if len(names) > 1:
            raise PredictError(f"{path}: a {len(names)}-lead record ({', '.join(names)}); choose the lead to classify "
                               "with --lead NAME or INDEX")
        return 0
    if lead in names:
        return names.index(lead)
    if lead.isdigit() and int(lead) < len(names):
        return int(lead)
    raise PredictError(f"{path}: no lead {lead!r}; expected one of its leads {names} or an index below {len(names)}")


def read_recording(path: str | Path, fs: float | None = None, gain: float = ADC_PER_MV,
                   lead: str | None = None) -> Signal:
    """Read a CinC ``.mat``, a WFDB record (``.hea``), a one-column ``.csv`` or a ``.npy`` signal.

    ``.mat`` files are taken at 300 Hz unless ``fs`` says otherwise; WFDB headers carry their rate
    and gain; ``.csv`` and ``.npy`` need ``fs``, and their samples are taken in units of
    1/``gain`` mV (CinC units by default). A WFDB record with several leads needs ``lead`` (a
    name from its header, or an index); the other formats hold one lead (``lead`` 0, if given).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    if suffix != ".hea":
        _lead_index(path, ["0"], lead)  # one lead: only 0 (or none) names it
    if suffix == ".mat":
        try:
            samples = read_signal(path).astype(np.float64)
        except RecordError as exc:
            raise PredictError(str(exc)) from None
        return Signal(samples, 300.0 if fs is None else fs, "0" if lead is not None else "")
    if suffix == ".hea":
        import wfdb

        try:
            record = wfdb.rdrecord(str(path.with_suffix("")), physical=False)
        except Exception as exc:  # wfdb raises many kinds for a bad header or signal file
            raise PredictError(f"{path}: not a readable WFDB record ({type(exc).__name__}: {exc})") from None
        if record.d_signal is None or record.d_signal.shape[1] < 1:
            raise PredictError(f"{path}: the WFDB record has no signal")
        names = [str(n) for n in (record.sig_name or range(record.d_signal.shape[1]))]
        i = _lead_index(path, names, lead)
        header_fs, gains = _header_fields(path)
        if fs is None and header_fs is not None:  # wfdb reads a rate it cannot parse as the default 250 Hz
            check_sampling_rate(header_fs, f"{path}: the header's sampling rate")
        # wfdb reads a gain of 0 as the default 200 units/mV: the header says nothing of its units
        check_gain(gains[i] if i < len(gains) and gains[i] is not None else record.adc_gain[i],
                   f"{path}: the header's gain of lead {names[i]}")
        digital = record.d_signal[:, i].astype(np.float64)
        physical_mv = (digital - record.baseline[i]) / record.adc_gain[i]
        return Signal(physical_mv * ADC_PER_MV, float(record.fs) if fs is None else fs, names[i])
    if suffix in (".csv", ".npy"):
        if fs is None:
            raise PredictError(f"{path}: a {suffix} signal needs its sampling rate (--fs)")
        try:
            with warnings.catch_warnings():  # an empty file: our own error below says so, once
                warnings.simplefilter("ignore")
                if suffix == ".npy":  # mapped, not read: Preprocessing streams it (a day at 10 kHz is 7 GB)
                    samples = np.load(path, mmap_mode="r", allow_pickle=False)
                else:
                    samples = np.loadtxt(path, delimiter=",", ndmin=1, skiprows=_header_rows(path),
                                         encoding="utf-8-sig")  # a byte-order mark is no header
        except Exception as exc:
            raise PredictError(f"{path}: not a readable {suffix} signal ({type(exc).__name__}: {exc})") from None
        if samples.dtype.kind not in "iuf":  # bools, strings, objects, records, complex numbers
            raise PredictError(f"{path}: expected real-valued samples, got dtype {samples.dtype}")
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.reshape(-1)  # a view, also of a mapped file
        if samples.ndim != 1:
            raise PredictError(f"{path}: expected one column of samples, got shape {samples.shape}")
        return Signal(samples, fs, "0" if lead is not None else "", scale=ADC_PER_MV / gain)
    raise PredictError(f"{path}: unknown format {suffix!r}; expected .mat, .hea, .csv or .npy")


def _header_fields(path: Path) -> tuple[str | None, list[str | None]]:
    """The sampling rate and each signal's gain as written in a WFDB header (None where left out),
    which wfdb replaces by its defaults when they are 0 or not numbers."""
    lines = [line.split() for line in path.read_text(errors="replace").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return None, []
    record = lines[0]  # name[/segments] signals [fs[/counter][(base)] [samples ...]]
    header_fs = record[2].split("/")[0].split("(")[0] if len(record) > 2 else None
    gains = []
    for line in lines[1:]:  # file format[xskew][:offset] [gain[(baseline)][/units] ...]
        gains.append(line[2].split("(")[0].split("/")[0] if len(line) > 2 else None)
    return header_fs, gains


def _header_rows(path: Path) -> int:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline().strip()
    try:
        float(first.split(",")[0])
        return 0
    except ValueError:
        return 1
