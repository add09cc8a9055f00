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
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from ecgpipe.data.balance import oversample
from ecgpipe.data.store import StoreError, read_records
from ecgpipe.experiment import RUN_FILE, load_trained
from ecgpipe.io import json_text, read_json, staged_outputs
from ecgpipe.predict import Predictor, read_recording
from ecgpipe.preprocessing import Preprocessing, SpectrogramChunks, probabilities
from ecgpipe.stats import CHALLENGE_CLASSES, Bootstrap, confidence_intervals
from ecgpipe.training import Chunks, predict_logits, resolve_device


def _curve_scores(y: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """ROC AUC and average precision; one-vs-rest macro averages with more than two classes."""
    present = np.unique(y)
    if len(present) < 2:
        warnings.warn(f"only class(es) {present.tolist()} present: ROC AUC and average precision undefined")
        return {"roc_auc": float("nan"), "average_precision": float("nan")}
    if n_classes == 2:
        return {"roc_auc": float(skm.roc_auc_score(y, probs[:, 1])),
                "average_precision": float(skm.average_precision_score(y, probs[:, 1]))}
    onehot = np.eye(n_classes)[y]
    keep = onehot.sum(axis=0) > 0  # a class absent from y has no ROC curve of its own
    if not keep.all():
        warnings.warn(f"classes {np.flatnonzero(~keep).tolist()} absent: left out of the one-vs-rest averages")
    return {"roc_auc": float(skm.roc_auc_score(onehot[:, keep], probs[:, keep], average="macro")),
            "average_precision": float(skm.average_precision_score(onehot[:, keep], probs[:, keep], average="macro"))}


def _balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": reported elsewhere
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(y, predicted))


def score(y: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Every figure of one level: accuracy, balanced accuracy, per-class precision / recall / F1 /
    support, macro F1, ROC AUC, average precision, confusion matrix (counts and row-normalised),
    and, with N, A and O among the classes, the CinC 2017 challenge score.

    A class that is never predicted has an undefined precision: it is reported as 0 with a warning.
    """
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(class_names)))
    predicted = probs.argmax(axis=1)
    never = [class_names[c] for c in labels if not (predicted == c).any() and (y == c).any()]
    if never:
        warnings.warn(f"no predictions for class(es) {never}: their precision is set to 0")
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0.0
    )
    confusion = skm.confusion_matrix(y, predicted, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(confusion / confusion.sum(axis=1, keepdims=True))
    result = {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "balanced_accuracy": _balanced_accuracy(y, predicted),
        "precision": dict(zip(class_names, map(float, precision))),
        "recall": dict(zip(class_names, map(float, recall))),
        "f1": dict(zip(class_names, map(float, f1))),
        "support": dict(zip(class_names, map(int, support))),
        "macro_f1": float(np.mean(f1)),
        **_curve_scores(y, probs, len(class_names)),
        "confusion": confusion.tolist(),
        "confusion_normalised": normalised.round(6).tolist(),
    }
    if set(CHALLENGE_CLASSES) <= set(class_names):
        result["challenge_score"] = float(np.mean([result["f1"][c] for c in CHALLENGE_CLASSES]))
    return result


# --- the evaluate stage -----------------------------------------------------------------------

LEVELS = ("chunk_balanced", "chunk", "record")


@dataclasses.dataclass
class SplitOutputs:
    """A split's recordings scored through a predictor: each window's logits and owner (the
    recording's row in records.csv), and one probability row per recording (rows ascending)."""

    logits: torch.Tensor
    owner: torch.Tensor
    rows: torch.Tensor
    probs: torch.Tensor


def score_split(predictor: Predictor, records_dir: Path, record_ids: np.ndarray, record_labels: torch.Tensor,
                chunks: Chunks, batch_size: int, seed: int,
                device: torch.device | str = "cpu") -> tuple[SplitOutputs, torch.Tensor]:
    """Score a split's recordings (those of its chunk file ``chunks``, in its order) from their
    ``.mat`` files through the predictor's preprocessing, as serving does. Returns the outputs and
    the balanced set of windows: the chunk file's own for the spectrogram featurizer, whose windows
    must equal the chunk file's bit for bit (else a StoreError: training and serving would
    disagree); for other featurizers the windows oversampled to equal classes with ``seed``.
    """
    rows = torch.unique_consecutive(chunks.records.cpu())
    signals = [read_recording(Path(records_dir) / f"{record_ids[r]}.mat") for r in rows.tolist()]
    x, owner = predictor.preprocessing.inputs(signals, rows.tolist())
    if isinstance(predictor.preprocessing.featurizer, SpectrogramChunks):
        if not (torch.equal(owner, chunks.records.cpu()) and torch.equal(x, chunks.x.cpu())):
            raise StoreError(f"{records_dir}: the recordings' chunks through the model's preprocessing differ from "
                             "the chunk stage's; rerun the pipeline (dvc repro)")
        balanced = chunks.balanced.cpu()
    else:
        balanced = torch.from_numpy(oversample(record_labels[owner].numpy(), np.random.default_rng(seed)))
    logits = predict_logits(predictor.model, x.to(device), batch_size).cpu()
    record_rows, probs = predictor.preprocessing.aggregate(logits, owner)
    return SplitOutputs(logits, owner, record_rows, probs), balanced


def evaluate_split(outputs: SplitOutputs, balanced: torch.Tensor, record_labels: torch.Tensor,
                   class_names: list[str], bootstrap: Bootstrap | None = None) -> dict:
    """Scores at the three levels; with ``bootstrap``, the recording level also gets ``ci``: an
    interval for every figure."""
    y = record_labels[outputs.owner]
    chunk_probs = probabilities(outputs.logits)
    record_y = record_labels[outputs.rows].numpy()
    scores = {
        "chunk_balanced": score(y[balanced].numpy(), chunk_probs[balanced].numpy(), class_names),
        "chunk": score(y.numpy(), chunk_probs.numpy(), class_names),
        "record": score(record_y, outputs.probs.numpy(), class_names),
    }
    if bootstrap is not None:
        scores["record"]["ci"] = confidence_intervals(record_y, outputs.probs.numpy(), class_names, bootstrap)
    return scores


def score_saved_model(params, model_dir: Path, split: str, records_dir: Path, spectrogram_dir: Path,
                      chunks_dir: Path) -> tuple[Predictor, SplitOutputs, dict]:
    """A trained model's predictor (with ``evaluate.aggregation``) and its scores on ``split``."""
    device = resolve_device(params.train.device)
    model, spec = load_trained(model_dir, device)
    preprocessing = dataclasses.replace(Preprocessing.from_spec(spec), aggregation=params.evaluate.aggregation)
    predictor = Predictor(model, preprocessing)
    table = read_records(spectrogram_dir)
    record_labels = torch.tensor(table["class_index"].to_numpy())
    outputs, balanced = score_split(predictor, records_dir, table["record"].to_numpy(), record_labels,
                                    Chunks.load(Path(chunks_dir) / f"{split}.pt", "cpu"),
                                    params.train.eval_batch_size, params.chunk.seed, device)
    scores = evaluate_split(outputs, balanced, record_labels, predictor.class_names, params.evaluate.bootstrap())
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
                add(f"{name}_{key}", v)
        elif isinstance(value, list):  # an interval
            flat[f"{name}_ci_low"], flat[f"{name}_ci_high"] = map(float, value)
        else:
            flat[name] = float(value)

    for split, levels in scores.items():
        for level, result in levels.items():
            for key, value in result.items():
                if key.startswith("confusion"):
                    continue
                if key == "ci":
                    for figure, interval in value.items():
                        add(f"{split}_{level}_{figure}", interval)
                else:
                    add(f"{split}_{level}_{key}", value)
    return {k.replace("~", "noise"): v for k, v in flat.items()}  # MLflow names allow no '~'


def per_class_table(result: dict, class_names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "class": class_names,
        **{k: [result[k][c] for c in class_names] for k in ("precision", "recall", "f1", "support")},
    })


def run_evaluate(params, name: str, records_dir: Path, spectrogram_dir: Path, chunks_dir: Path, model_dir: Path,
                 metrics_path: Path, plots_dir: Path, predictor_dir: Path) -> dict:
    """The `evaluate@NAME` stage: score NAME's model on validation, with intervals on every
    recording-level figure, and package it with its aggregation rule as a predictor (an MLflow
    pyfunc model). A test split is left alone: the report stage scores the champion on it once.

    Writes the metrics JSON, and under ``plots_dir``: ``confusion/NAME/<split>.csv`` (one row per
    recording, for DVC's confusion template), ``roc/NAME/<split>.csv`` and ``pr/NAME/<split>.csv``
    (AF against the rest, per recording), and ``figures/NAME/*.png``. The same numbers, figures and
    per-class tables go into the experiment's MLflow run, with the predictor. ``predictor_dir``
    gets the same predictor as a folder (``mlflow models serve -m predictor_dir`` serves it).
    """
    import mlflow  # heavy: only the stage needs it, not the metric functions

    from ecgpipe import plots, serving, tracking

    table = read_records(spectrogram_dir)
    scores, outputs, figures = {}, {}, {}
    # validation only: a test split is scored once, for the champion alone, by the report stage
    for split in ("val",):
        predictor, rec, scores[split] = score_saved_model(params, model_dir, split, records_dir, spectrogram_dir,
                                                          chunks_dir)
        class_names = predictor.class_names
        positive = class_names.index("A") if "A" in class_names else len(class_names) - 1
        probs = rec.probs.numpy()
        rows = rec.rows.numpy()
        actual = table["class_index"].to_numpy()[rows]
        predictions = pd.DataFrame({
            "record": table["record"].to_numpy()[rows],
            "actual": [class_names[i] for i in actual],
            "predicted": [class_names[i] for i in probs.argmax(axis=1)],
            **{f"p_{c}": probs[:, i].round(6) for i, c in enumerate(class_names)},
        })
        is_positive = actual == positive
        fpr, tpr, roc_thresholds = skm.roc_curve(is_positive, probs[:, positive])
        precision, recall, _ = skm.precision_recall_curve(is_positive, probs[:, positive])
        outputs[split] = {
            "confusion": predictions,
            "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr}),
            "pr": pd.DataFrame({"recall": recall, "precision": precision}),
        }
        figures[f"confusion_{split}.png"] = plots.confusion_matrices(scores[split], class_names, f"{name}: {split}")
        figures[f"roc_pr_{split}.png"] = plots.roc_pr_curves(
            fpr, tpr, recall, precision, scores[split]["record"], class_names[positive], f"{name}: {split}, per recording")

    summary = metrics_for_dvc(scores)
    # a real validation recording as the predictor's input example
    example = read_recording(Path(records_dir) / f"{outputs['val']['confusion']['record'].iloc[0]}.mat").samples
    kinds = ("confusion", "roc", "pr")
    with staged_outputs() as staged:
        folders = {kind: staged.dir(Path(plots_dir) / kind / name) for kind in (*kinds, "figures")}
        for split, frames in outputs.items():
            for kind in kinds:
                frames[kind].to_csv(folders[kind] / f"{split}.csv", index=False, float_format="%.6g")
        for file_name, fig in figures.items():
            fig.savefig(folders["figures"] / file_name, dpi=110)
        serving.save_predictor(model_dir, params.evaluate.aggregation, example, staged.dir(predictor_dir))
        staged.file(metrics_path).write_text(json_text(summary))

    with tracking.resumed_run(read_json(Path(model_dir) / RUN_FILE)):
        mlflow.log_metrics(mlflow_metrics(scores))
        mlflow.log_param("evaluate.aggregation", params.evaluate.aggregation)
        for split, levels in scores.items():
            for level, result in levels.items():
                mlflow.log_table(per_class_table(result, class_names), artifact_file=f"evaluation/{split}_{level}_per_class.json")
            mlflow.log_dict({lvl: {"classes": class_names, "counts": r["confusion"],
                                   "row_normalised": r["confusion_normalised"]} for lvl, r in levels.items()},
                            f"evaluation/{split}_confusion.json")
            mlflow.log_table(outputs[split]["confusion"], artifact_file=f"evaluation/{split}_record_predictions.json")
        for file_name, fig in figures.items():
            mlflow.log_figure(fig, f"evaluation/{file_name}")
        serving.log_predictor(model_dir, params.evaluate.aggregation, example)
        # the train stage's dvc.lock entry exists by now (DVC writes it when the stage ends); DVC
        # runs stages in the repository's root, for a queued experiment in its temporary copy
        tracking.log_dvc_lock_entry(f"train@{name}", Path("dvc.lock"))
    return summary
