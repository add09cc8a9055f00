"""Units and names every layer shares: the archive's sampling rate and units, its labels, plain names."""
from __future__ import annotations

# every CinC 2017 recording's rate: the rate that conditioning and the device shifts act at
SAMPLING_RATE_HZ = 300


# Labels of the CinC 2017 reference file: normal, AF, other rhythm, noisy.
KNOWN_LABELS = ("N", "A", "O", "~")
# A class of spectrogram.classes that holds every known label not listed beside it: [rest, A] is
# AF against everything else (normal, other rhythms, noise). records.csv keeps each recording's
# own label in its `source_label` column, so the false alarms are counted per label.
REST_LABEL = "rest"


SEED_LIMIT = 2**32  # numpy's and torch's generators take any seed in [0, 2**32)


# The longest CinC 2017 recording has 18,286 samples (61 s). Every recording is padded to
# max_length in memory (8,528 of them), so lengths are bounded to what the machine can hold.
MAX_RECORDING_SAMPLES = 60_000  # 200 s at 300 Hz: 2 GB of float32 for the whole archive


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def is_plain_name(name: str) -> bool:
    """Letters, digits, '_', '.' and '-' only: safe in MLflow metric names and filters, DVC names."""
    return bool(name) and not set(name) - _NAME_CHARS


ADC_PER_MV = 1000  # the CinC recordings' units: 1/1000 mV; other units are converted to these
