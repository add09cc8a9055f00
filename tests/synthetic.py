"""Small synthetic recordings in the CinC 2017 format, for tests only (never for the pipeline).

Each record is a MATLAB v4 file with one int16 variable ``val`` (1, samples) at 300 Hz, a WFDB
header, and a line in ``REFERENCE.csv``, as in the real archive. The rhythms are caricatures
that a network can tell apart: regular beats (N), irregular beats over a 6 Hz fibrillatory
wave (A), regular beats with a wide shape (O), and noise (~).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import scipy.io

FS = 300


def synthetic_signal(label: str, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n_samples) / FS
    signal = np.zeros(n_samples)
    if label == "~":
        signal = rng.normal(0, 300, n_samples)
    else:
        width = 0.05 if label == "O" else 0.015
        beat_times, now = [], rng.uniform(0, 0.5)
        while now < t[-1]:
            beat_times.append(now)
            now += rng.uniform(0.35, 1.1) if label == "A" else 0.8 + rng.normal(0, 0.01)
        for beat in beat_times:
            signal += 1000 * np.exp(-0.5 * ((t - beat) / width) ** 2)
        if label == "A":
            signal += 80 * np.sin(2 * np.pi * 6 * t + rng.uniform(0, 6))
        signal += rng.normal(0, 20, n_samples)
    return np.round(signal).astype(np.int16)


def write_record(directory: Path, record: str, signal: np.ndarray) -> None:
    scipy.io.savemat(directory / f"{record}.mat", {"val": signal[None, :]}, format="4")
    (directory / f"{record}.hea").write_text(
        f"{record} 1 {FS} {len(signal)} 05:05:15 1/05/2000 \n"
        f"{record}.mat 16+24 1000/mV 16 0 {int(signal[0])} 0 0 ECG \n"
    )


def make_records(directory: Path, labels: list[str], lengths: list[int], seed: int = 0) -> dict[str, str]:
    """Write records A00001... with the given labels and lengths; return record -> label."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    reference = {}
    for i, (label, length) in enumerate(zip(labels, lengths), start=1):
        record = f"A{i:05d}"
        write_record(directory, record, synthetic_signal(label, length, rng))
        reference[record] = label
    (directory / "REFERENCE.csv").write_text("".join(f"{r},{l}\r\n" for r, l in reference.items()))
    (directory / "RECORDS").write_text("".join(f"{r}\n" for r in reference))
    return reference


def zip_records(directory: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Zip ``directory`` as ``training2017/...`` (the real layout), plus ``extra`` raw entries."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("training2017/", "")
        for path in sorted(directory.iterdir()):
            zf.write(path, f"training2017/{path.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def default_set(n: int = 48, seed: int = 0) -> tuple[list[str], list[int]]:
    """Labels (mostly N, some A, O and ~) and lengths between 1,000 and 3,000 samples."""
    rng = np.random.default_rng(seed)
    labels = list(rng.choice(["N", "N", "N", "A", "O", "~"], size=n))
    labels[:4] = ["N", "A", "O", "~"]  # every class present
    lengths = list(rng.integers(900, 3001, size=n))  # a few below min_length 1000
    return labels, [int(x) for x in lengths]
