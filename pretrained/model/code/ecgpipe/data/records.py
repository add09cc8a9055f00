"""CinC 2017 records: the reference labels and the single-lead signals in MATLAB v4 files."""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from ecgpipe.core.errors import RecordError
from ecgpipe.core.units import KNOWN_LABELS, REST_LABEL

log = logging.getLogger(__name__)

REFERENCE_FILE = "REFERENCE.csv"


# A record id names its files (``<id>.mat``, ``<id>.hea``): a plain file name, never a path.
_RECORD_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def decode_reference(data: bytes, source: str) -> str:
    """``REFERENCE.csv``'s bytes as text: UTF-8, with or without a byte-order mark."""
    try:
        return data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of the first id
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"{source}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "expected lines such as 'A00001,N'"
        ) from None


def parse_reference(text: str, source: str) -> dict[str, str]:
    """Parse ``REFERENCE.csv`` (``A00001,N`` per line, no header) into record id -> label."""
    labels: dict[str, str] = {}
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip():
            raise RecordError(f"{source}: line {line_no}: expected 'record,label', got {','.join(row)!r}")
        record, label = row[0].strip(), row[1].strip()
        if set(record) - _RECORD_ID_CHARS or record.startswith("."):
            raise RecordError(
                f"{source}: line {line_no}: record id {record!r} is not a plain file name "
                "(expected letters, digits, '_', '-' or '.', such as A00001)"
            )
        if label not in KNOWN_LABELS:
            raise RecordError(
                f"{source}: line {line_no}: record {record} has label {label!r}, expected one of {list(KNOWN_LABELS)}"
            )
        if record in labels:
            raise RecordError(f"{source}: line {line_no}: record {record} is listed twice")
        labels[record] = label
    if not labels:
        raise RecordError(f"{source}: no records listed")
    return labels


def read_reference(records_dir: str | Path) -> dict[str, str]:
    path = Path(records_dir) / REFERENCE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"{path}: missing (every CinC 2017 records folder has one)") from None
    return parse_reference(decode_reference(data, str(path)), str(path))


def read_signal(path: str | Path) -> np.ndarray:
    """One recording as a 1-D array of its samples (int16 in the CinC files)."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: record file missing")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises many kinds for a damaged file
        raise RecordError(f"{path}: not a readable MATLAB record ({type(exc).__name__}: {exc})") from None
    val = mat.get("val")
    if not isinstance(val, np.ndarray) or val.ndim != 2 or val.shape[0] != 1 or val.shape[1] == 0:
        shape = getattr(val, "shape", None)
        raise RecordError(f"{path}: expected a variable 'val' of shape (1, samples), got {shape}")
    if not np.issubdtype(val.dtype, np.number) or np.issubdtype(val.dtype, np.complexfloating):
        raise RecordError(f"{path}: expected real samples, got dtype {val.dtype}")
    if val.dtype == np.uint8 and dict((n, c) for n, _, c in scipy.io.whosmat(path)).get("val") == "logical":
        raise RecordError(f"{path}: expected real samples, got a MATLAB logical (true/false) array")
    signal = val[0]
    if signal.dtype.kind == "f" and not np.isfinite(signal).all():
        raise RecordError(f"{path}: samples are not all finite")
    return signal


@dataclass
class Recordings:
    """Selected recordings, zero-padded to one length, in record-id order."""

    signals: np.ndarray  # (n, max_length), the files' own dtype (int16): half of float32's memory
    lengths: np.ndarray  # (n,) samples before padding
    labels: np.ndarray  # (n,) class index into ``class_names``
    record_ids: list[str]
    class_names: list[str]
    source_labels: list[str]  # each recording's own label in REFERENCE.csv (differs under REST_LABEL)


def class_of_label(classes: list[str]) -> dict[str, int]:
    """Each known label's class index in ``classes``: its own, else REST_LABEL's (if listed)."""
    index = {label: i for i, label in enumerate(classes) if label in KNOWN_LABELS}
    if REST_LABEL in classes:
        index.update({label: classes.index(REST_LABEL) for label in KNOWN_LABELS if label not in index})
    return index


def _names(records: list[str], shown: int = 5) -> str:
    return ", ".join(records[:shown]) + (f" and {len(records) - shown} more" if len(records) > shown else "")


def load_recordings(
    records_dir: str | Path, classes: list[str], min_length: int, max_length: int, flat_records: str = "refuse"
) -> Recordings:
    """Load the recordings of ``classes`` with at least ``min_length`` samples, padded to ``max_length``.

    The order is the sorted record ids, as the notebook's sorted ``glob``. Flat recordings (every
    sample equal) are refused, naming them, or with ``flat_records="drop"`` left out (and named in
    the log). Every class must keep at least one recording.
    """
    records_dir = Path(records_dir)
    reference = read_reference(records_dir)
    index = class_of_label(classes)
    chosen = sorted(r for r, label in reference.items() if label in index)
    signals: list[np.ndarray] = []
    kept: list[str] = []
    flat: list[str] = []
    for record in chosen:
        signal = read_signal(records_dir / f"{record}.mat")
        if len(signal) < min_length:
            continue
        if len(signal) > max_length:
            raise RecordError(
                f"{records_dir / record}.mat: {len(signal)} samples, more than spectrogram.max_length "
                f"({max_length}); raise max_length"
            )
        if signal.min() == signal.max():
            flat.append(record)
            continue
        signals.append(signal)
        kept.append(record)
    if flat and flat_records == "refuse":
        raise RecordError(f"{records_dir}: {len(flat)} flat recording(s), every sample equal (a lead off?): "
                          f"{_names(flat)}; expected a signal. Remove them from {REFERENCE_FILE}, or set "
                          "spectrogram.flat_records: drop")
    if flat:
        log.warning("left out %d flat recording(s) (spectrogram.flat_records: drop): %s", len(flat), _names(flat))
    if not kept:
        raise RecordError(f"{records_dir}: no recording of classes {classes} has >= {min_length} samples")
    missing = sorted(set(classes) - {classes[index[reference[r]]] for r in kept}, key=classes.index)
    if missing:
        raise RecordError(f"{records_dir}: no recording of class {', '.join(missing)} (with >= {min_length} samples) "
                          f"in {REFERENCE_FILE}; expected every class of spectrogram.classes {classes}")
    dtype = np.result_type(*{s.dtype for s in signals})
    padded = np.zeros((len(signals), max_length), dtype=dtype)
    lengths = np.empty(len(signals), dtype=np.int64)
    for i, signal in enumerate(signals):
        padded[i, : len(signal)] = signal
        lengths[i] = len(signal)
    labels = np.array([index[reference[r]] for r in kept], dtype=np.int64)
    return Recordings(padded, lengths, labels, kept, list(classes), [reference[r] for r in kept])
