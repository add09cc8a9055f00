"""Figures of one recording's beats, for a model beside the network (issue 24): RR irregularity,
premature beats, beat shape, P waves and noise, from wfdb's XQRS detector, as most of the 2017
challenge winners used them. Every feature was fixed before any fold was scored."""
from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.signal
import wfdb.processing

from ecgpipe.core.errors import StoreError
from ecgpipe.core.io import atomic_path
from ecgpipe.core.units import ADC_PER_MV, SAMPLING_RATE_HZ

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


def feature_row(samples: np.ndarray, fs: float = SAMPLING_RATE_HZ) -> np.ndarray:
    """:func:`rhythm_features` of one recording as a row in FEATURE_NAMES order."""
    values = rhythm_features(samples, fs)
    return np.array([values[name] for name in FEATURE_NAMES], dtype=np.float64)


def feature_rows(samples: Sequence[np.ndarray], fs: float = SAMPLING_RATE_HZ, workers: int | None = None) -> np.ndarray:
    """(recordings, features): one :func:`feature_row` per recording, across ``workers`` processes
    (default: the CPUs this process may use). A row depends on its own samples only, so the result
    does not depend on the number of processes."""
    from tqdm import tqdm

    workers = workers or len(os.sched_getaffinity(0))
    progress = {"desc": "rhythm features", "unit": "recording", "total": len(samples)}
    if workers <= 1 or len(samples) < PARALLEL_FROM:
        rows = [feature_row(x, fs) for x in tqdm(samples, **progress)]
    else:  # spawned, not forked: a fork of a process that holds torch's threads may hang
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(tqdm(pool.map(partial(feature_row, fs=fs), samples, chunksize=16), **progress))
    return np.stack(rows) if rows else np.empty((0, len(FEATURE_NAMES)))


PARALLEL_FROM = 200  # recordings: below that, starting the processes costs more than it saves


def write_features(path: Path, records: list[str], rows: np.ndarray) -> None:
    """The features stage's table: a ``record`` column, then FEATURE_NAMES; whole or not at all."""
    table = pd.DataFrame(rows, index=pd.Index(records, name="record"), columns=list(FEATURE_NAMES))
    with atomic_path(Path(path)) as tmp:
        table.to_csv(tmp)  # the shortest repr of each float, which read_features gets back exactly (a test checks)


def read_features(path: Path, records: Sequence[str]) -> np.ndarray:
    """(len(records), features): the rows of ``records`` in the features stage's table ``path``; a
    StoreError naming the file when it is not such a table or lacks one of them."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"record": str}).set_index("record")
        values = table[list(FEATURE_NAMES)].to_numpy(np.float64)
    except FileNotFoundError:
        raise StoreError(f"{path}: missing; run the features stage first (dvc repro features)") from None
    except (KeyError, ValueError) as exc:  # another table, a cell that is no number, undecodable text
        raise StoreError(f"{path}: not the features stage's table of {len(FEATURE_NAMES)} rhythm features "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0]}); rerun it (dvc repro features)") from None
    if tuple(table.columns) != FEATURE_NAMES:
        raise StoreError(f"{path}: made with other rhythm features than this ecgpipe computes (columns "
                         f"{list(table.columns)}); rerun the features stage (dvc repro features)")
    row = {r: i for i, r in enumerate(table.index)}
    missing = [r for r in records if r not in row]
    if missing:
        raise StoreError(f"{path}: no features of {len(missing)} recording(s) (e.g. {missing[0]}); expected every "
                         "recording of the records folder: rerun the features stage (dvc repro features)")
    return values[[row[r] for r in records]]
