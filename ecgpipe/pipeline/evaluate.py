"""The `evaluate@NAME` stage: score a trained model on validation, under the device shifts too,
and package it as a predictor."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from ecgpipe.core.device import resolve_device
from ecgpipe.core.io import json_text, read_json, staged_outputs
from ecgpipe.core.results import (
    RECORD,
    UNSEEN,
    calibration_columns,
    joined,
    mlflow_names,
    shifts_key,
    unseen_columns,
    worst_shift_key,
)
from ecgpipe.data.store import CALIBRATION, read_records
from ecgpipe.evaluation.calibration import calibration_figures
from ecgpipe.evaluation.metrics import Bootstrap, positive_class
from ecgpipe.evaluation.robustness import evaluate_shifts, shift_mlflow_metrics, worst_shift
from ecgpipe.evaluation.saved_model import score_saved_model
from ecgpipe.evaluation.scoring import metrics_for_dvc, mlflow_metrics, per_class_table, score_unseen_labels
from ecgpipe.inference.predictor import served_settings
from ecgpipe.params import ChunkParams, EvaluateParams, TrainParams


def bootstrap_of(evaluate: EvaluateParams) -> Bootstrap:
    """The bootstrap that ``evaluate``'s settings declare, for every interval of the evaluation."""
    return Bootstrap(evaluate.bootstrap_resamples, evaluate.bootstrap_seed, evaluate.confidence)


def scoring_settings(evaluate: EvaluateParams, train: TrainParams, chunk: ChunkParams) -> dict:
    """What scoring a saved model takes from params.yaml (``score_saved_model``'s keywords)."""
    return {"aggregation": evaluate.aggregation, "device": train.device, "batch_size": train.eval_batch_size,
            "seed": chunk.seed, "bootstrap": bootstrap_of(evaluate), "af_sensitivity": evaluate.af_sensitivity}


def calibration_section(predictor, outputs, is_positive, held_out: Path, bootstrap: Bootstrap) -> dict | None:
    """eval.json's section of a predictor fitted on the recordings held out of training (``held_out``, the
    split's calibration chunk file): its temperature, its decision's rule, and the calibration error of
    P(positive) on ``outputs``' recordings, with the temperature and without it (None: nothing held out)."""
    if not held_out.is_file():
        return None
    served = predictor.preprocessing
    _, raw = dataclasses.replace(served, temperature=1.0).aggregate(outputs.logits, outputs.owner)
    positive = predictor.class_names.index(positive_class(predictor.class_names))
    figures = calibration_figures(outputs.probs.numpy()[:, positive], is_positive, bootstrap)
    return {"temperature": served.temperature,
            **({"decision": served.decision.to_dict()} if served.decision is not None else {}),
            **figures, "ece_uncalibrated": calibration_figures(raw.numpy()[:, positive], is_positive, bootstrap)["ece"]}


def record_outputs(name: str, split: str, records: np.ndarray, actual: np.ndarray, probs: np.ndarray,
                   labels: np.ndarray, class_names: list[str], scores: dict) -> tuple[dict, dict]:
    """A split's tables (``confusion``: one row per recording with its served label and probabilities,
    ``roc`` and ``pr`` of the positive class per recording) and figures, of a network or an ensemble."""
    from ecgpipe.reporting import plots

    positive = class_names.index(positive_class(class_names))
    predictions = pd.DataFrame({
        "record": records,
        "actual": [class_names[i] for i in actual],
        "predicted": [class_names[i] for i in labels],  # the served label
        **{f"p_{c}": probs[:, i].round(6) for i, c in enumerate(class_names)},
    })
    is_positive = actual == positive
    fpr, tpr, _ = skm.roc_curve(is_positive, probs[:, positive])
    precision, recall, _ = skm.precision_recall_curve(is_positive, probs[:, positive])
    tables = {"confusion": predictions, "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr}),
              "pr": pd.DataFrame({"recall": recall, "precision": precision})}
    figures = {f"confusion_{split}.png": plots.confusion_matrices(scores, class_names, f"{name}: {split}"),
               f"roc_pr_{split}.png": plots.roc_pr_curves(fpr, tpr, recall, precision, scores[RECORD],
                                                          class_names[positive], f"{name}: {split}, per recording")}
    return tables, figures


@dataclasses.dataclass
class Evaluation:
    """What the evaluate stage of any experiment kind measured: ``scores`` by split and level, the
    split's tables and figures (:func:`record_outputs`), and where measured, the calibration section,
    the device shifts with the worst of them, and the labels the task never trained on."""

    class_names: list[str]
    scores: dict
    tables: dict
    figures: dict
    calibrated: dict | None = None
    shifted: dict | None = None
    worst: dict | None = None
    unseen: dict | None = None

    def summary(self) -> dict:
        """eval.json: the scores without confusion matrices, and each section measured."""
        summary = metrics_for_dvc(self.scores)
        if self.calibrated is not None:
            summary[CALIBRATION] = metrics_for_dvc(self.calibrated)
        if self.unseen is not None:
            summary[UNSEEN] = metrics_for_dvc(self.unseen)
        if self.shifted:
            summary[shifts_key("val")] = metrics_for_dvc(self.shifted)
            summary[worst_shift_key("val")] = metrics_for_dvc(self.worst)
        return summary

    def write(self, name: str, metrics_path: Path, plots_dir: Path, save_model) -> dict:
        """The stage's files, whole or not at all: eval.json, the tables and figures under ``plots_dir``
        (``confusion|roc|pr|figures/NAME/``), and the served model (``save_model(staged)``)."""
        summary = self.summary()
        kinds = ("confusion", "roc", "pr")
        with staged_outputs() as staged:
            folders = {kind: staged.dir(Path(plots_dir) / kind / name) for kind in (*kinds, "figures")}
            for split, frames in self.tables.items():
                for kind in kinds:
                    frames[kind].to_csv(folders[kind] / f"{split}.csv", index=False, float_format="%.6g")
            for file_name, fig in self.figures.items():
                fig.savefig(folders["figures"] / file_name, dpi=110)
            save_model(staged)
            staged.file(metrics_path).write_text(json_text(summary))
        return summary

    def log(self, run_info: dict, shifts: dict, log_model) -> None:
        """The same figures, tables and plots into the experiment's MLflow run, and the served model
        (``log_model()``)."""
        import mlflow

        from ecgpipe.reporting import plots
        from ecgpipe.tracking import runs as tracking

        positive = positive_class(self.class_names)
        with tracking.resumed_run(run_info):
            # at the last epoch's step: the training curves of the chunk and record figures end on these values
            mlflow.log_metrics(mlflow_metrics(self.scores), step=run_info.get("epochs", 0))
            if self.shifted:
                mlflow.log_metrics(shift_mlflow_metrics("val", self.shifted))
                # one figure per run, for studies across folds
                mlflow.log_metrics(mlflow_names({joined(worst_shift_key("val"), k): v
                                                 for k, v in self.worst.items() if isinstance(v, float)}))
                mlflow.log_dict({"shifts": {n: dataclasses.asdict(s) for n, s in shifts.items()},
                                 "results": metrics_for_dvc(self.shifted)}, "evaluation/val_shifts.json")
            if self.unseen is not None:
                mlflow.log_metrics(mlflow_names(unseen_columns(self.unseen)))
            if self.calibrated is not None:
                mlflow.log_metrics(calibration_columns(self.calibrated, positive))
            for split, levels in self.scores.items():
                for level, result in levels.items():
                    mlflow.log_table(per_class_table(result, self.class_names),
                                     artifact_file=f"evaluation/{split}_{level}_per_class.json")
                mlflow.log_dict({lvl: {"classes": self.class_names, "counts": r["confusion"],
                                       "row_normalised": r["confusion_normalised"]} for lvl, r in levels.items()},
                                f"evaluation/{split}_confusion.json")
                mlflow.log_table(self.tables[split]["confusion"],
                                 artifact_file=tracking.record_predictions_artifact(split))
            for file_name, fig in self.figures.items():
                mlflow.log_figure(fig, f"evaluation/{file_name}")
            plots.close(*self.figures.values())
            log_model()


def run_evaluate(evaluate: EvaluateParams, train: TrainParams, chunk: ChunkParams, name: str, records_dir: Path,
                 spectrogram_dir: Path, chunks_dir: Path, model_dir: Path, metrics_path: Path, plots_dir: Path,
                 predictor_dir: Path) -> dict:
    """The `evaluate@NAME` stage: score NAME's model on validation, with intervals on every
    recording-level figure, and package it with its aggregation rule as a predictor (an MLflow
    pyfunc model). A test split is left alone: the report stage scores the champion on it once.

    Writes the metrics JSON, and under ``plots_dir``: ``confusion/NAME/<split>.csv`` (one row per
    recording, for DVC's confusion template), ``roc/NAME/<split>.csv`` and ``pr/NAME/<split>.csv``
    (AF against the rest, per recording), and ``figures/NAME/*.png``. The same numbers, figures and
    per-class tables go into the experiment's MLflow run, with the predictor. ``predictor_dir``
    gets the same predictor as a folder (``mlflow models serve -m predictor_dir`` serves it).
    Of params.yaml it reads ``evaluate``, and of ``train`` and ``chunk`` the device, the batch size
    and the seed of scoring.
    """
    import mlflow  # heavy: only the stage needs it, not the metric functions

    from ecgpipe.reporting import plots
    from ecgpipe.tracking import pyfunc
    from ecgpipe.tracking import runs as tracking
    from ecgpipe.tracking.runs import RUN_FILE

    resolve_device(train.device)  # a device this machine lacks is said first
    # the run this stage logs into: its store checked before minutes of scoring, not after
    run_info = read_json(Path(model_dir) / RUN_FILE)
    tracking.check_store_file(run_info["tracking_uri"])
    table = read_records(spectrogram_dir)
    # validation only: a test split is scored once, for the champion alone, by the report stage
    split = "val"
    predictor, rec, split_scores = score_saved_model(model_dir, split, records_dir, spectrogram_dir, chunks_dir,
                                                     **scoring_settings(evaluate, train, chunk))
    class_names = list(predictor.class_names)
    positive = class_names.index(positive_class(class_names))
    probs, rows = rec.probs.numpy(), rec.rows.numpy()
    actual = table["class_index"].to_numpy()[rows]
    tables, figures = record_outputs(name, split, table["record"].to_numpy()[rows], actual, probs,
                                     predictor.preprocessing.labels(probs), class_names, split_scores)
    held_out = Path(chunks_dir) / f"{CALIBRATION}.pt"
    calibrated = calibration_section(predictor, rec, actual == positive, held_out, bootstrap_of(evaluate))
    if calibrated is not None:
        figures[f"reliability_{split}.png"] = plots.reliability(calibrated, class_names[positive],
                                                                f"{name}: {split}, per recording")

    # the same recordings again under each device shift (params evaluate.shifts), through predict's path
    record_labels = torch.tensor(table["class_index"].to_numpy())
    shifted = evaluate_shifts(predictor, record_labels, rec, evaluate.shifts, evaluate.shift_seed,
                              train.eval_batch_size, bootstrap_of(evaluate), resolve_device(train.device))
    evaluation = Evaluation(
        class_names, {split: split_scores}, {split: tables}, figures, calibrated, shifted,
        worst_shift(shifted, class_names),
        # every recording of a label the task never trained on (CinC's O and ~ for N against A): AF's false alarms
        score_unseen_labels(predictor, records_dir, train.eval_batch_size, bootstrap_of(evaluate),
                            resolve_device(train.device)))
    # a real validation recording as the predictor's input example
    example = rec.signals[int(rec.rows[0])].samples  # the first recording of the predictions table
    served = served_settings(predictor.preprocessing)
    summary = evaluation.write(name, metrics_path, plots_dir,
                               lambda staged: pyfunc.save_predictor(model_dir, served, example,
                                                                    staged.dir(predictor_dir)))

    def log_model() -> None:
        mlflow.log_param("evaluate.aggregation", evaluate.aggregation)
        pyfunc.log_predictor(model_dir, served, example)
        # the train stage's dvc.lock entry exists by now (DVC writes it when the stage ends); DVC
        # runs stages in the repository's root, for a queued experiment in its temporary copy
        tracking.log_dvc_lock_entry(f"train@{name}", Path("dvc.lock"))

    evaluation.log(run_info, evaluate.shifts, log_model)
    return summary
