"""Scoring: chunk- and recording-level metrics with scikit-learn, and chunk-to-recording aggregation.

Three levels per split:
- ``chunk_balanced``: the chunks oversampled to equal classes (the notebook's figure);
- ``chunk``: the chunks as they occur (about 12% AF);
- ``record``: each recording's chunks aggregated into one probability per class, which is what a
  clinician classifies.

Recordings are scored from their files through the model's preprocessing object, the path that
``ecgpipe predict`` and the served model take (:func:`score_split`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ecgpipe.core.device import resolve_device
from ecgpipe.core.errors import StoreError
from ecgpipe.core.results import LEVELS, RECORD, interval, joined, mlflow_names
from ecgpipe.data.balance import oversample
from ecgpipe.data.store import Chunks, read_records, source_labels
from ecgpipe.evaluation.metrics import Bootstrap, confidence_intervals, score
from ecgpipe.inference.checkpoint import load_trained
from ecgpipe.inference.featurizers import SpectrogramChunks
from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.preprocessing import Preprocessing
from ecgpipe.inference.readers import Signal, read_recording
from ecgpipe.models.heads import probabilities

# --- the evaluate stage -----------------------------------------------------------------------

@dataclasses.dataclass
class SplitOutputs:
    """A split's recordings scored through a predictor: each window's logits and owner (the
    recording's row in records.csv), and one probability row per recording (rows ascending)."""

    logits: torch.Tensor
    owner: torch.Tensor
    rows: torch.Tensor
    probs: torch.Tensor
    signals: dict[int, Signal]  # the recordings as read, by row: the device shifts start from them


def same_windows(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two computations of the same network input agree to float32 rounding (see score_split)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=WINDOW_RTOL, atol=WINDOW_ATOL)


# normalised spectra are O(1): a few float32 ulps relative, and 1e-5 absolute near zero
WINDOW_RTOL, WINDOW_ATOL = 1e-5, 1e-5


def score_split(predictor: Predictor, records_dir: Path, record_ids: np.ndarray, record_labels: torch.Tensor,
                chunks: Chunks, batch_size: int, seed: int,
                device: torch.device | str = "cpu") -> tuple[SplitOutputs, torch.Tensor]:
    """Score a split's recordings (those of its chunk file ``chunks``, in its order) from their
    ``.mat`` files through the predictor's preprocessing, as serving does. Returns the outputs and
    the balanced set of windows: the chunk file's own for the spectrogram featurizer, whose windows
    must equal the chunk file's to float32 rounding (else a StoreError: training and serving would
    disagree); for other featurizers the windows oversampled to equal classes with ``seed``.

    The tolerance, not bit equality: the chunk stage computed its spectra in batches, this path one
    recording at a time, and a CPU's batched FFT may round otherwise (by ~1e-7 relative). A real
    mismatch (other settings, other records) differs by orders of magnitude more.
    """
    rows = torch.unique_consecutive(chunks.records.cpu())
    signals = [read_recording(Path(records_dir) / f"{record_ids[r]}.mat") for r in rows.tolist()]
    x, owner = predictor.preprocessing.inputs(signals, rows.tolist())
    featurizer = predictor.preprocessing.featurizer
    if isinstance(featurizer, SpectrogramChunks) and not featurizer.from_samples:
        if not (torch.equal(owner, chunks.records.cpu()) and same_windows(x, chunks.x.cpu())):
            raise StoreError(f"{records_dir}: the recordings' chunks through the model's preprocessing differ from "
                             "the chunk stage's; rerun the pipeline (dvc repro)")
        balanced = chunks.balanced.cpu()
    else:
        balanced = torch.from_numpy(oversample(record_labels[owner].numpy(), np.random.default_rng(seed)))
    scores = predictor.score_windows(x, owner, batch_size, device)
    return SplitOutputs(scores.logits, owner, scores.rows, scores.probs, dict(zip(rows.tolist(), signals))), balanced


def evaluate_split(outputs: SplitOutputs, balanced: torch.Tensor, record_labels: torch.Tensor,
                   class_names: list[str], bootstrap: Bootstrap | None = None,
                   record_sources: np.ndarray | None = None) -> dict:
    """Scores at the three levels; with ``bootstrap``, the recording level also gets ``ci``: an
    interval for every figure. ``record_sources``: each recording's own label, by row (for the
    false alarms per label of a class that holds several)."""
    y = record_labels[outputs.owner]
    chunk_probs = probabilities(outputs.logits)
    record_y = record_labels[outputs.rows].numpy()
    sources = None if record_sources is None else record_sources[outputs.rows.numpy()]
    scores = dict(zip(LEVELS, (score(y[balanced].numpy(), chunk_probs[balanced].numpy(), class_names),
                               score(y.numpy(), chunk_probs.numpy(), class_names),
                               score(record_y, outputs.probs.numpy(), class_names, sources))))
    if bootstrap is not None:
        scores[RECORD]["ci"] = confidence_intervals(record_y, outputs.probs.numpy(), class_names, bootstrap,
                                                        sources)
    return scores


def score_saved_model(model_dir: Path, split: str, records_dir: Path, spectrogram_dir: Path, chunks_dir: Path, *,
                      aggregation: str, device: str, batch_size: int, seed: int,
                      bootstrap: Bootstrap) -> tuple[Predictor, SplitOutputs, dict]:
    """A trained model's predictor (with ``aggregation``) and its scores on ``split``: ``batch_size``
    windows per forward pass, ``seed`` for the balanced set of a featurizer without a chunk file."""
    device = resolve_device(device)
    model, spec = load_trained(model_dir, device)
    preprocessing = dataclasses.replace(Preprocessing.from_spec(spec), aggregation=aggregation)
    predictor = Predictor(model, preprocessing)
    table = read_records(spectrogram_dir)
    record_labels = torch.tensor(table["class_index"].to_numpy())
    outputs, balanced = score_split(predictor, records_dir, table["record"].to_numpy(), record_labels,
                                    Chunks.load(Path(chunks_dir) / f"{split}.pt", "cpu"),
                                    batch_size, seed, device)
    scores = evaluate_split(outputs, balanced, record_labels, predictor.class_names, bootstrap, source_labels(table))
    return predictor, outputs, scores


def metrics_for_dvc(scores: dict) -> dict:
    """The scores without the confusion matrices (kept in their own files), rounded for display."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not k.startswith("confusion")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return round(value, 6) if isinstance(value, float) else value
    return clean(scores)


def mlflow_metrics(scores: dict) -> dict[str, float]:
    """Flat names such as ``val_record_f1_A``, ``val_chunk_balanced_accuracy`` or, for intervals,
    ``val_record_f1_A_ci_low`` and ``_ci_high``."""
    flat = {}

    def add(name: str, value) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                add(joined(name, key), v)
        elif isinstance(value, list):  # an interval
            flat.update(zip(interval(name), map(float, value)))
        else:
            flat[name] = float(value)

    for split, levels in scores.items():
        for level, result in levels.items():
            for key, value in result.items():
                if key.startswith("confusion"):
                    continue
                if key == "ci":
                    for figure, bounds in value.items():
                        add(joined(split, level, figure), bounds)
                else:
                    add(joined(split, level, key), value)
    return mlflow_names(flat)


def per_class_table(result: dict, class_names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "class": class_names,
        **{k: [result[k][c] for c in class_names] for k in ("precision", "recall", "f1", "support")},
    })


