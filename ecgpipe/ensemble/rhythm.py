"""Figures of one recording's beats, for a model beside the network (issue 24): RR irregularity,
premature beats, beat shape, P waves and noise, from wfdb's XQRS detector, as most of the 2017
challenge winners used them. Every feature was fixed before any fold was scored."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.signal
import wfdb.processing

from ecgpipe.core.errors import OutputError
from ecgpipe.core.io import atomic_path
from ecgpipe.core.units import ADC_PER_MV, SAMPLING_RATE_HZ
from ecgpipe.data.records import Recordings

# the features in the order a model takes them: those of the whole signal, then those of its beats
# (NaN where there are too few beats to say)
BEAT_FEATURES = ("rr_median", "rr_cv", "rr_range", "rmssd", "successive_change", "pnn50", "irregular_share",
                 "premature_share", "rr_sample_entropy", "beat_corr_mean", "beat_corr_p10", "odd_beat_share",
                 "qrs_amp_cv", "p_wave_ratio", "tq_noise_ratio")
FEATURE_NAMES = ("duration_s", "power_above_40hz", "power_below_0.5hz", "kurtosis", "beats_per_10s", *BEAT_FEATURES)


def _sample_entropy(x: np.ndarray, m: int = 2, r: float = 0.2) -> float:
    """Sample entropy of a short series (Richman & Moorman), tolerance ``r`` times its SD."""
    if len(x) < m + 3 or np.ptp(x) == 0:
        return np.nan
    tol = r * x.std()

    def matches(k: int) -> int:
        t = np.lib.stride_tricks.sliding_window_view(x, k)[: len(x) - m]
        d = np.abs(t[:, None, :] - t[None, :, :]).max(axis=2)
        return int((d <= tol).sum() - len(t))  # pairs, both orders, self-matches left out

    b, a = matches(m), matches(m + 1)
    return float(-np.log(a / b)) if a > 0 and b > 0 else np.nan


def rhythm_features(samples: np.ndarray, fs: float = SAMPLING_RATE_HZ) -> dict[str, float]:
    """Figures of one recording (samples in 1/1000 mV) that describe its rhythm, beat shape and noise.
    NaN where there are too few beats to say (the gradient-boosted model takes NaN as "unknown")."""
    mv = np.asarray(samples, dtype=np.float64) / ADC_PER_MV
    sos = scipy.signal.butter(2, [0.5, 40], btype="bandpass", fs=fs, output="sos")
    clean = scipy.signal.sosfiltfilt(sos, mv)
    power = np.abs(np.fft.rfft(mv - mv.mean())) ** 2
    freqs = np.fft.rfftfreq(len(mv), 1 / fs)
    total = power.sum() or 1.0
    f = {"duration_s": len(mv) / fs,
         "power_above_40hz": power[freqs > 40].sum() / total,
         "power_below_0.5hz": power[freqs < 0.5].sum() / total,
         "kurtosis": float(pd.Series(clean).kurt())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        beats = np.asarray(wfdb.processing.xqrs_detect(clean, fs=fs, verbose=False), dtype=np.int64)
    f["beats_per_10s"] = 10 * len(beats) / (len(mv) / fs)
    rr = np.diff(beats) / fs
    keys = BEAT_FEATURES
    if len(rr) < 4:
        return {**f, **dict.fromkeys(keys, np.nan)}
    median = float(np.median(rr))
    dr = np.diff(rr)
    ratio = rr[1:] / rr[:-1]
    f.update(rr_median=median, rr_cv=rr.std() / rr.mean(), rr_range=(rr.max() - rr.min()) / median,
             rmssd=np.sqrt(np.mean(dr ** 2)) / median, successive_change=np.median(np.abs(dr)) / median,
             pnn50=float(np.mean(np.abs(dr) > 0.05)), irregular_share=float(np.mean((ratio < 0.85) | (ratio > 1.15))),
             # a short interval followed by a long one: an ectopic beat and its compensatory pause
             premature_share=float(np.mean((rr[:-1] < 0.85 * median) & (rr[1:] > 1.1 * median))),
             rr_sample_entropy=_sample_entropy(rr))
    before, after = int(0.25 * fs), int(0.4 * fs)
    inner = beats[(beats >= before) & (beats + after < len(clean))]
    if len(inner) < 3:
        return {**f, **dict.fromkeys(keys[9:], np.nan)}
    segments = np.stack([clean[b - before: b + after] for b in inner])
    template = np.median(segments, axis=0)
    centred = segments - segments.mean(axis=1, keepdims=True)
    t = template - template.mean()
    corr = centred @ t / (np.linalg.norm(centred, axis=1) * np.linalg.norm(t) + 1e-12)
    qrs = slice(before - int(0.05 * fs), before + int(0.05 * fs))
    p_wave = slice(before - int(0.22 * fs), before - int(0.08 * fs))
    amplitude = np.ptp(segments[:, qrs], axis=1)
    qrs_amp = float(np.ptp(template[qrs])) or 1e-12
    # the last 0.1 s before each P wave region: flat in sinus rhythm, fibrillatory waves in AF
    tq = np.stack([clean[b - before: b - before + int(0.1 * fs)] for b in inner])
    f.update(beat_corr_mean=float(corr.mean()), beat_corr_p10=float(np.percentile(corr, 10)),
             odd_beat_share=float(np.mean(corr < 0.8)), qrs_amp_cv=float(amplitude.std() / (amplitude.mean() + 1e-12)),
             p_wave_ratio=float(np.ptp(template[p_wave])) / qrs_amp,
             tq_noise_ratio=float(np.median(tq.std(axis=1))) / qrs_amp)
    return f


class FeatureCache:
    """Feature rows by key in a CSV (``path``; None keeps them in memory only): a record id, or a record
    id with the shift that changed its samples. Features depend on the samples only, so a row computed
    once serves every later run, and every network beside it."""

    def __init__(self, path: Path | None = None):
        self.path = None if path is None else Path(path)
        self.rows: dict[str, np.ndarray] = {}
        self.added = False
        if self.path is not None and self.path.exists():
            self.rows = self._read()

    def _read(self) -> dict[str, np.ndarray]:
        """The cache file's rows (none if made by other features: computed again); any other file (a
        user's CSV, REFERENCE.csv) is an OutputError, and is never written over."""
        if not self.path.is_file():
            raise OutputError(f"{self.path}: not a file; expected the path of a feature cache (a CSV)")
        keep = "name a new file or one that --features-cache wrote: this one is left as it is"
        try:
            with open(self.path, encoding="utf-8") as f:
                first_column = f.readline().split(",")[0].strip()
            if first_column != "record":
                raise OutputError(f"{self.path}: not a feature cache (its first column is not 'record'); {keep}")
            # round_trip: the very floats that were written, as a freshly computed row would give
            table = pd.read_csv(self.path, dtype={"record": str}, float_precision="round_trip").set_index("record")
            values = table.to_numpy(np.float64)  # numbers only
        except OutputError:
            raise
        except ValueError as exc:  # undecodable text, a malformed CSV, a cell that is no number
            raise OutputError(f"{self.path}: not a feature cache ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                              f"{keep}") from None
        return dict(zip(table.index, values)) if tuple(table.columns) == FEATURE_NAMES else {}

    def get(self, key: str, samples, fs: float = SAMPLING_RATE_HZ) -> np.ndarray:
        """The features of ``samples`` (those of ``key``), computed only if ``key`` is new."""
        if key not in self.rows:
            values = rhythm_features(samples, fs)
            self.rows[key] = np.array([values[name] for name in FEATURE_NAMES], dtype=np.float64)
            self.added = True
        return self.rows[key]

    def save(self) -> None:
        if self.path is not None and self.added:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            table = pd.DataFrame(list(self.rows.values()), index=pd.Index(list(self.rows), name="record"),
                                 columns=list(FEATURE_NAMES))
            with atomic_path(self.path) as tmp:  # whole or not at all: an interrupted run keeps the old cache
                table.to_csv(tmp)
            self.added = False


def feature_table(recordings: Recordings, cache: FeatureCache | Path | None = None) -> pd.DataFrame:
    """One row of :func:`rhythm_features` per recording, in their order (each from its own samples,
    not the padding), columns FEATURE_NAMES; rows that ``cache`` holds are not computed again."""
    from tqdm import tqdm

    cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    rows = [cache.get(r, recordings.signals[i, : recordings.lengths[i]])
            for i, r in enumerate(tqdm(recordings.record_ids, desc="rhythm features", unit="recording"))]
    cache.save()
    return pd.DataFrame(rows, index=pd.Index(recordings.record_ids, name="record"), columns=list(FEATURE_NAMES))
