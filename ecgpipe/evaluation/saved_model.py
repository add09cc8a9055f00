"""A saved model scored as the evaluate stage scores it: its operating point (temperature and decision's
rule) fitted first on the recordings the split held out of training, then the split's figures."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ecgpipe.core.device import resolve_device
from ecgpipe.core.results import AF
from ecgpipe.data.store import CALIBRATION, Chunks, read_records, source_labels
from ecgpipe.evaluation.calibration import decision_on, fit_temperature
from ecgpipe.evaluation.metrics import Bootstrap
from ecgpipe.evaluation.scoring import SplitOutputs, evaluate_split, score_split
from ecgpipe.inference.checkpoint import load_trained
from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.preprocessing import Preprocessing


def fit_operating_point(predictor: Predictor, records_dir: Path, record_ids: np.ndarray, record_labels: torch.Tensor,
                        chunks_dir: Path, batch_size: int, seed: int, device: torch.device | str,
                        af_sensitivity: float | None) -> Predictor:
    """The predictor with its temperature and, with ``af_sensitivity``, its decision's rule, fitted on
    the recordings that the split held out of training (``calibration.pt`` of ``chunks_dir``); the
    predictor as it is where there are none (the notebook's split)."""
    path = Path(chunks_dir) / f"{CALIBRATION}.pt"
    if not path.is_file():
        return predictor
    held_out, _ = score_split(predictor, records_dir, record_ids, record_labels, Chunks.load(path, "cpu"), batch_size,
                              seed, device)
    y = record_labels[held_out.rows].numpy()
    fitted = dataclasses.replace(predictor.preprocessing,
                                 temperature=fit_temperature(held_out.logits, held_out.owner, y, predictor.aggregation))
    classes = list(fitted.class_names)
    if af_sensitivity is not None and AF in classes:
        _, probs = fitted.aggregate(held_out.logits, held_out.owner)
        a = classes.index(AF)
        fitted = dataclasses.replace(fitted, decision=decision_on(probs[:, a].numpy(), y == a, AF, af_sensitivity))
    return Predictor(predictor.model, fitted, predictor.limits)


def score_saved_model(model_dir: Path, split: str, records_dir: Path, spectrogram_dir: Path, chunks_dir: Path, *,
                      aggregation: str, device: str, batch_size: int, seed: int, bootstrap: Bootstrap,
                      af_sensitivity: float | None = None) -> tuple[Predictor, SplitOutputs, dict]:
    """A trained model's predictor (with ``aggregation``, and its operating point: :func:`fit_operating_point`)
    and its scores on ``split``: ``batch_size`` windows per forward pass, ``seed`` for the balanced set of a
    featurizer without a chunk file."""
    device = resolve_device(device)
    model, spec = load_trained(model_dir, device)
    preprocessing = dataclasses.replace(Preprocessing.from_spec(spec), aggregation=aggregation)
    table = read_records(spectrogram_dir)
    record_labels = torch.tensor(table["class_index"].to_numpy())
    ids = table["record"].to_numpy()
    predictor = fit_operating_point(Predictor(model, preprocessing), records_dir, ids, record_labels, chunks_dir,
                                    batch_size, seed, device, af_sensitivity)
    outputs, balanced = score_split(predictor, records_dir, ids, record_labels,
                                    Chunks.load(Path(chunks_dir) / f"{split}.pt", "cpu"), batch_size, seed, device)
    scores = evaluate_split(outputs, balanced, record_labels, predictor.class_names, bootstrap, source_labels(table),
                            predictor.preprocessing)
    return predictor, outputs, scores
