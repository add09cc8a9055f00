"""Check the data card of a real-archive run against the figures the notebook printed."""
import json
import math
import sys

EXPECTED_SPECTROGRAM = {
    "n_records": 5622,
    "class_counts": {"N": 4931, "A": 691},
    "class_proportions": {"N": 0.87709, "A": 0.12291},
    "samples": {"min": 4004, "median": 9000, "max": 18286},
    "windows": {"min": 141, "median": 320, "max": 651},
    "n_bins": 17,
    "mean": 0.000327,
    "std": 1.003635,
}
EXPECTED_CHUNK = {
    "train": {"records": {"total": 4497}, "chunks": {"total": 38805, "N": 33999, "A": 4806},
              "balanced_chunks": {"total": 67998}},
    "val": {"records": {"total": 1125}, "chunks": {"total": 9741, "N": 8427, "A": 1314},
            "balanced_chunks": {"total": 16854}},
}


def compare(expected, actual, path=""):
    errors = []
    for key, want in expected.items():
        got = actual.get(key) if isinstance(actual, dict) else None
        if isinstance(want, dict):
            errors += compare(want, got or {}, f"{path}{key}.")
        elif isinstance(want, float) and isinstance(got, (int, float)):
            # the spectrogram statistics are float32 sums over 5,622 records, whose last digits depend on
            # the CPU's summation order: equal to 1e-4 (the notebook printed 3 decimals), not to 6 digits
            if not math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5):
                errors.append(f"{path}{key}: expected {want}, got {got}")
        elif got != want:
            errors.append(f"{path}{key}: expected {want}, got {got}")
    return errors


errors = compare(EXPECTED_SPECTROGRAM, json.load(open("metrics/spectrogram.json")), "spectrogram.")
errors += compare(EXPECTED_CHUNK, json.load(open("metrics/chunk.json")), "chunk.")
for error in errors:
    print("data card mismatch:", error)
print("data card:", "matches the notebook's figures" if not errors else f"{len(errors)} mismatches")
sys.exit(1 if errors else 0)
