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
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ecgpipe.core.errors import PredictError, StoreError
from ecgpipe.core.results import AF, LEVELS, RECORD, VAL, history_name, interval, joined, mlflow_names
from ecgpipe.core.units import REST_LABEL
from ecgpipe.data.balance import oversample
from ecgpipe.data.records import read_reference
from ecgpipe.data.store import Chunks
from ecgpipe.evaluation.metrics import Bootstrap, confidence_intervals, score, unseen_label_figures
from ecgpipe.inference.featurizers import SpectrogramChunks
from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.preprocessing import Preprocessing
from ecgpipe.inference.readers import Signal, read_recording
from ecgpipe.models.heads import loss_fn, probabilities

log = logging.getLogger(__name__)

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


@dataclasses.dataclass
class SplitWindows:
    """A split's recordings as network input, cut by a model's preprocessing (the one window cutter):
    every window, its recording (row of records.csv), and the balanced set of windows."""

    x: torch.Tensor
    owner: torch.Tensor
    balanced: torch.Tensor


def same_windows(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two computations of the same network input agree to float32 rounding (see split_windows)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=WINDOW_RTOL, atol=WINDOW_ATOL)


# normalised spectra are O(1): a few float32 ulps relative, and 1e-5 absolute near zero
WINDOW_RTOL, WINDOW_ATOL = 1e-5, 1e-5


def split_windows(preprocessing: Preprocessing, signals: dict[int, Signal], record_labels: torch.Tensor,
                  chunks: Chunks | None, seed: int, source: str) -> SplitWindows:
    """The windows of a split's recordings ``signals`` (by row, in its chunk file's order) through the
    model's preprocessing, as serving cuts them, and the balanced set: the chunk file's own for the
    spectrogram featurizer that trains on chunk files, whose windows must equal the chunk file's to
    float32 rounding (else a StoreError naming ``source``: training and serving would disagree); for
    other featurizers the windows oversampled to equal classes with ``seed``.

    The tolerance, not bit equality: the chunk stage computed its spectra in batches, this path one
    recording at a time, and a CPU's batched FFT may round otherwise (by ~1e-7 relative). A real
    mismatch (other settings, other records) differs by orders of magnitude more.
    """
    x, owner = preprocessing.inputs(list(signals.values()), list(signals))
    featurizer = preprocessing.featurizer
    if isinstance(featurizer, SpectrogramChunks) and not featurizer.from_samples:
        if chunks is None:
            raise ValueError(f"{source}: a spectrogram featurizer without robustness options needs its chunk file")
        if not (torch.equal(owner, chunks.records.cpu()) and same_windows(x, chunks.x.cpu())):
            raise StoreError(f"{source}: the recordings' chunks through the model's preprocessing differ from "
                             "the chunk stage's; rerun the pipeline (dvc repro)")
        balanced = chunks.balanced.cpu()
    else:
        balanced = torch.from_numpy(oversample(record_labels[owner].numpy(), np.random.default_rng(seed)))
    return SplitWindows(x, owner, balanced)


def split_rows(chunks: Chunks) -> list[int]:
    """The recordings (rows of records.csv) of a chunk file, in its order."""
    return torch.unique_consecutive(chunks.records.cpu()).tolist()


def score_split(predictor: Predictor, records_dir: Path, record_ids: np.ndarray, record_labels: torch.Tensor,
                chunks: Chunks, batch_size: int, seed: int,
                device: torch.device | str = "cpu") -> tuple[SplitOutputs, torch.Tensor]:
    """Score a split's recordings (those of its chunk file ``chunks``, in its order) from their
    ``.mat`` files through the predictor, as serving does. Returns the outputs and the balanced set
    of windows (:func:`split_windows`)."""
    signals = {r: read_recording(Path(records_dir) / f"{record_ids[r]}.mat") for r in split_rows(chunks)}
    windows = split_windows(predictor.preprocessing, signals, record_labels, chunks, seed, str(records_dir))
    scores = predictor.score_windows(windows.x, windows.owner, batch_size, device)
    return SplitOutputs(scores.logits, windows.owner, scores.rows, scores.probs, signals), windows.balanced


def score_files(predictor: Predictor, paths: list[Path], batch_size: int,
                device: torch.device | str = "cpu") -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Recordings read from their files through the predictor: one probability row for each one it
    scores, their places in ``paths``, and why it refused the others (by place), e.g. too short."""
    parts, owners, refused = [], [], {}
    for i, path in enumerate(paths):
        try:
            parts.append(predictor.network_input(read_recording(path)))
            owners.append(i)
        except PredictError as exc:
            refused[i] = str(exc)
    if not parts:
        return np.empty((0, len(predictor.class_names))), [], refused
    owner = torch.repeat_interleave(torch.tensor(owners), torch.tensor([len(p) for p in parts]))
    scores = predictor.score_windows(torch.cat(parts), owner, batch_size, device)
    return scores.probs.numpy(), scores.rows.tolist(), refused


def score_unseen_labels(predictor: Predictor, records_dir: Path, batch_size: int, bootstrap: Bootstrap,
                        device: torch.device | str = "cpu") -> dict | None:
    """AF's false alarms on every recording of ``records_dir`` whose label the model was never trained
    on (``metrics.unseen_label_figures``), with how many it refused; None for a model without AF or
    whose classes hold every label (all four, or REST_LABEL)."""
    classes = list(predictor.class_names)
    unseen = {r: label for r, label in read_reference(records_dir).items() if label not in classes}
    if AF not in classes or REST_LABEL in classes or not unseen:
        return None
    records = list(unseen)
    probs, scored, refused = score_files(predictor, [Path(records_dir) / f"{r}.mat" for r in records], batch_size,
                                         device)
    for i, why in refused.items():
        log.warning("%s: not scored as an unseen rhythm: %s", records[i], why)
    called = predictor.preprocessing.labels(probs) if len(probs) else None  # the served rule's labels
    return {**unseen_label_figures(probs, classes, [unseen[records[i]] for i in scored], bootstrap, called),
            "refused": len(refused)}


def evaluate_split(outputs: SplitOutputs, balanced: torch.Tensor, record_labels: torch.Tensor,
                   class_names: list[str], bootstrap: Bootstrap | None = None,
                   record_sources: np.ndarray | None = None, served: Preprocessing | None = None) -> dict:
    """Scores at the three levels; with ``bootstrap``, the recording level also gets ``ci``: an
    interval for every figure. ``record_sources``: each recording's own label, by row (for the
    false alarms per label of a class that holds several). ``served``: a preprocessing with a
    decision's rule, which then labels the recordings (the chunk levels keep the most likely class)."""
    y = record_labels[outputs.owner]
    chunk_probs = probabilities(outputs.logits)
    record_y = record_labels[outputs.rows].numpy()
    sources = None if record_sources is None else record_sources[outputs.rows.numpy()]
    labels = None if served is None else served.labels(outputs.probs.numpy())
    scores = dict(zip(LEVELS, (score(y[balanced].numpy(), chunk_probs[balanced].numpy(), class_names),
                               score(y.numpy(), chunk_probs.numpy(), class_names),
                               score(record_y, outputs.probs.numpy(), class_names, sources, labels))))
    if bootstrap is not None:
        scores[RECORD]["ci"] = confidence_intervals(record_y, outputs.probs.numpy(), class_names, bootstrap,
                                                    sources, labels)
    return scores


@dataclasses.dataclass
class Validation:
    """Training-time validation through the Predictor: the validation recordings' windows, cut once
    by the model's preprocessing, scored after each epoch as the evaluate stage scores them (the same
    windows, balanced set, aggregation and figures), as history columns (``history_name``)."""

    preprocessing: Preprocessing
    windows: SplitWindows
    record_labels: torch.Tensor  # class index by row of records.csv
    batch_size: int

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        scores = Predictor(model, self.preprocessing).score_windows(self.windows.x, self.windows.owner,
                                                                    self.batch_size, device)
        outputs = SplitOutputs(scores.logits, scores.owner, scores.rows, scores.probs, {})
        class_names = list(self.preprocessing.class_names)
        levels = evaluate_split(outputs, self.windows.balanced, self.record_labels, class_names)
        y = self.record_labels[outputs.owner]
        figures = {}
        for level, index in zip(LEVELS, (self.windows.balanced, slice(None))):  # the chunk levels' loss
            figures[history_name(VAL, level, "loss")] = float(loss_fn(outputs.logits[index], y[index]))
        for level in LEVELS:
            figures[history_name(VAL, level, "accuracy")] = levels[level]["accuracy"]
        record = levels[RECORD]
        figures[history_name(VAL, RECORD, "balanced_accuracy")] = record["balanced_accuracy"]
        if AF in class_names:
            figures[history_name(VAL, RECORD, joined("f1", AF))] = record["f1"][AF]
        return mlflow_names(figures)


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


