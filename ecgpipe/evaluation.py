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
from ecgpipe.preprocessing import Preprocessing, Signal, SpectrogramChunks, probabilities
from ecgpipe.shifts import Shift, shift_rng
from ecgpipe.stats import (
    CHALLENGE_CLASSES, Bootstrap, confidence_intervals, positive_class, resampled_figures, stratified_resamples,
)
from ecgpipe.stats import figure as stat_figure
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
    negatives = len(y) - confusion.sum(axis=1)  # one class against the rest
    false_positives = confusion.sum(axis=0) - np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        specificity = np.where(negatives > 0, (negatives - false_positives) / np.maximum(negatives, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.nan_to_num(confusion / confusion.sum(axis=1, keepdims=True))
    result = {
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "balanced_accuracy": _balanced_accuracy(y, predicted),
        "precision": dict(zip(class_names, map(float, precision))),
        "recall": dict(zip(class_names, map(float, recall))),
        "f1": dict(zip(class_names, map(float, f1))),
        "specificity": dict(zip(class_names, map(float, specificity))),
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
    logits = predict_logits(predictor.model, x.to(device), batch_size).cpu()
    record_rows, probs = predictor.preprocessing.aggregate(logits, owner)
    return SplitOutputs(logits, owner, record_rows, probs, dict(zip(rows.tolist(), signals))), balanced


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


# --- device shifts ------------------------------------------------------------------------------

SHIFT_FIGURES = ("roc_auc", "f1", "recall", "specificity")  # recall of A = sensitivity to AF


def score_shift(predictor: Predictor, signals: list[Signal], rows: torch.Tensor, name: str, shift: Shift, seed: int, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Probabilities (rows ascending) of the recordings ``signals`` (of ``rows``) under ``shift``."""
    shifted = []
    for signal, row in zip(signals, rows.tolist()):
        samples, fs = shift.apply(signal.samples, signal.fs, shift_rng(seed, name, row))
        shifted.append(Signal(samples, fs))
    x, owner = predictor.preprocessing.inputs(shifted, rows.tolist())
    logits = predict_logits(predictor.model, x.to(device), batch_size).cpu()
    return predictor.preprocessing.aggregate(logits, owner)[1]


def resample_figures(y: np.ndarray, probs: np.ndarray, class_names: list[str], bootstrap: Bootstrap) -> tuple[dict, dict]:
    """(figures on the recordings as they are, figures on each bootstrap resample): the resamples
    depend only on ``y`` and the seed, so those of two scorings of the same recordings are paired."""
    identity = np.arange(len(y))[None, :]
    index = stratified_resamples(y, bootstrap.resamples, bootstrap.seed)
    return resampled_figures(y, probs, class_names, identity), resampled_figures(y, probs, class_names, index)


def shift_figures(y: np.ndarray, probs: np.ndarray, clean: tuple[dict, dict], class_names: list[str],
                  bootstrap: Bootstrap) -> dict:
    """One shift's recording-level figures: ROC AUC, F1, sensitivity (``recall``) and specificity per
    class, each with its interval (``ci``), and ``change``: the paired difference from the unshifted
    figures ``clean`` (of :func:`resample_figures`) of F1 of the positive class and of ROC AUC,
    as [difference, low, high]."""
    full = score(y, probs, class_names)
    figures = {k: full[k] for k in SHIFT_FIGURES}
    point, resampled = resample_figures(y, probs, class_names, bootstrap)
    figures["ci"] = {k: {c: list(bootstrap.interval(v)) for c, v in resampled[k].items()}
                     if isinstance(resampled[k], dict) else list(bootstrap.interval(resampled[k]))
                     for k in SHIFT_FIGURES}
    figures["change"] = {}
    for name in (f"f1_{positive_class(class_names)}", "roc_auc"):
        difference = float(stat_figure(point, name)[0] - stat_figure(clean[0], name)[0])
        low, high = bootstrap.interval(stat_figure(resampled, name) - stat_figure(clean[1], name))
        figures["change"][name] = [difference, low, high]
    return figures


def evaluate_shifts(predictor: Predictor, record_labels: torch.Tensor, clean: SplitOutputs, shifts: dict[str, Shift],
                    seed: int, batch_size: int, bootstrap: Bootstrap, device: torch.device | str = "cpu") -> dict:
    """:func:`shift_figures` of every shift, for the recordings that ``clean`` scored unshifted
    (starting from the recordings as it read them)."""
    signals = [clean.signals[r] for r in clean.rows.tolist()]
    y = record_labels[clean.rows].numpy()
    clean_resampled = resample_figures(y, clean.probs.numpy(), list(predictor.class_names), bootstrap)
    results = {}
    for name, shift in shifts.items():
        probs = score_shift(predictor, signals, clean.rows, name, shift, seed, batch_size, device)
        results[name] = shift_figures(y, probs.numpy(), clean_resampled, list(predictor.class_names), bootstrap)
    return results


def worst_shift(shifts: dict, class_names: list[str]) -> dict | None:
    """The shift with the lowest F1 of the positive class, and the lowest ROC AUC under any shift."""
    if not shifts:
        return None
    positive = positive_class(class_names)
    name = min(shifts, key=lambda n: shifts[n]["f1"][positive])
    return {"shift": name, f"f1_{positive}": shifts[name]["f1"][positive],
            f"f1_{positive}_change": shifts[name]["change"][f"f1_{positive}"][0],
            "min_roc_auc": min(v["roc_auc"] for v in shifts.values()),
            "min_roc_auc_shift": min(shifts, key=lambda n: shifts[n]["roc_auc"])}


def shift_mlflow_metrics(split: str, shifts: dict) -> dict[str, float]:
    """``val_shift_<name>_roc_auc``, ``..._f1_A``, ``..._f1_A_ci_low``, ``..._change_f1_A`` ..."""
    flat = {}
    for name, figures in shifts.items():
        prefix = f"{split}_shift_{name}"
        for key in SHIFT_FIGURES:
            value, interval = figures[key], figures["ci"][key]
            for cls, v in (value.items() if isinstance(value, dict) else [("", value)]):
                label = f"{prefix}_{key}_{cls}" if cls else f"{prefix}_{key}"
                low, high = interval[cls] if cls else interval
                flat.update({label: float(v), f"{label}_ci_low": float(low), f"{label}_ci_high": float(high)})
        for figure, (diff, low, high) in figures["change"].items():
            flat.update({f"{prefix}_change_{figure}": diff, f"{prefix}_change_{figure}_ci_low": low,
                         f"{prefix}_change_{figure}_ci_high": high})
    return {k.replace("~", "noise"): v for k, v in flat.items()}


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
    from ecgpipe.experiment import RUN_FILE

    resolve_device(params.train.device)  # a device this machine lacks is said first
    # the run this stage logs into: its store checked before minutes of scoring, not after
    tracking.check_store_file(read_json(Path(model_dir) / RUN_FILE)["tracking_uri"])
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

    # the same recordings again under each device shift (params evaluate.shifts), through predict's path
    record_labels = torch.tensor(table["class_index"].to_numpy())
    shifted = evaluate_shifts(predictor, record_labels, rec, params.evaluate.shifts, params.evaluate.shift_seed,
                              params.train.eval_batch_size, params.evaluate.bootstrap(),
                              resolve_device(params.train.device))
    worst = worst_shift(shifted, list(class_names))
    summary = metrics_for_dvc(scores)
    if shifted:
        summary["val_shifts"] = metrics_for_dvc(shifted)
        summary["val_worst_shift"] = metrics_for_dvc(worst)
    # a real validation recording as the predictor's input example
    example = rec.signals[int(rec.rows[0])].samples  # the first recording of the predictions table
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
        if shifted:
            mlflow.log_metrics(shift_mlflow_metrics("val", shifted))
            # one figure per run, for studies across folds
            mlflow.log_metrics({f"val_worst_shift_{k}".replace("~", "noise"): v for k, v in worst.items()
                                if isinstance(v, float)})
            mlflow.log_dict({"shifts": {n: dataclasses.asdict(s) for n, s in params.evaluate.shifts.items()},
                             "results": metrics_for_dvc(shifted)}, "evaluation/val_shifts.json")
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
