"""The data card: the counts and summaries that the data stages report as DVC metrics."""
from __future__ import annotations

import numpy as np


def class_counts(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    """Count per class name (every class listed, zero included) and the total."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return {"total": int(counts.sum()), **{name: int(c) for name, c in zip(class_names, counts)}}


def min_median_max(values: np.ndarray) -> dict[str, int]:
    ordered = np.sort(values)
    # the lower median, as torch.median (the notebook's figure) takes for an even count
    return {"min": int(ordered[0]), "median": int(ordered[(len(ordered) - 1) // 2]), "max": int(ordered[-1])}
