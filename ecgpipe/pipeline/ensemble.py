"""The experiments of the ensemble kind (params ``ensembles``; a task's come from ``task_ensembles``):
a trained network beside a gradient-boosted tree model on each recording's rhythm features, their
probabilities averaged (``ecgpipe.ensemble.model.RhythmEnsemble``). Two stages make and judge one,
as `train` and `evaluate` do a network:

- ``ensemble_train``: the trees fitted on the split's training recordings (the features stage's
  rows), beside the network's predictor as its evaluate stage packaged it (its temperature
  included); a learned combiner (``combiner: logistic``) and the served operating point fitted on
  the recordings held out of training (split.json's ``calibration``, never the validation
  recordings), as a network's operating point is; an MLflow run of its own.
- ``ensemble_evaluate``: the validation recordings through the ensemble (the network through the
  Predictor, the trees on the same samples' features), scored by the same functions into the same
  files and names as a network's evaluate stage (:class:`~ecgpipe.pipeline.evaluate.Evaluation`),
  the device shifts by the one loop over them, and the ensemble as a servable MLflow model.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from ecgpipe.core.device import resolve_device
from ecgpipe.core.errors import ParamsError, StoreError
from ecgpipe.core.io import json_text, read_json, staged_outputs
from ecgpipe.core.results import AF, RECORD, joined
from ecgpipe.data.store import CALIBRATION, read_records, source_labels
from ecgpipe.ensemble.combiner import LOGISTIC, LogisticCombiner
from ecgpipe.ensemble.combiner import SETTINGS as COMBINER_SETTINGS
from ecgpipe.ensemble.model import ARTIFACT, RhythmEnsemble, network_files
from ecgpipe.ensemble.rhythm import FEATURE_NAMES, feature_rows, read_features
from ecgpipe.ensemble.trees import SETTINGS, BoostedTrees
from ecgpipe.evaluation.calibration import calibration_figures, decision_on
from ecgpipe.evaluation.metrics import confidence_intervals, positive_class, score
from ecgpipe.evaluation.robustness import shifts_figures, worst_shift
from ecgpipe.inference.predictor import PREDICTOR_SPEC, Predictor
from ecgpipe.inference.readers import Signal, read_recording
from ecgpipe.params import EnsembleParams, Params, ensemble_name
from ecgpipe.pipeline.evaluate import Evaluation, bootstrap_of, record_outputs
from ecgpipe.tracking.runs import RUN_FILE, study_tags

KIND = "rhythm-ensemble"  # the MLflow tag ecgpipe.kind of its runs


def ensemble_of(params: Params, network: str) -> EnsembleParams:
    """The settings of ``network``'s rhythm ensemble (ParamsError: it has none)."""
    try:
        return params.ensembles[network]
    except KeyError:
        raise ParamsError(f"params: ensembles.{network}: no such ensemble (the params file's ensembles are those of "
                          f"{sorted(params.ensembles)})") from None


@dataclasses.dataclass
class SplitRecordings:
    """The recordings of one part of split.json, in records.csv's row order (as a network's evaluate
    stage scores them): their ids, rows, classes, own labels and samples as read from their files."""

    records: np.ndarray
    rows: list[int]
    y: np.ndarray
    sources: np.ndarray
    signals: list[Signal]


def split_rows(table, spectrogram_dir: Path, split_path: Path, part: str) -> list[int]:
    """The rows of records.csv (``table``) of split.json's ``part``, in the split's order; a StoreError
    naming the split when one of its recordings is not there (a split of another spectrogram stage)."""
    position = {r: i for i, r in enumerate(table["record"])}
    ids = read_json(split_path).get(part, [])
    missing = [r for r in ids if r not in position]
    if missing:
        raise StoreError(f"{split_path}: {len(missing)} recording(s) of {part!r} not in {spectrogram_dir}'s records "
                         f"(e.g. {missing[0]}); expected the split of the same spectrogram stage: rerun it")
    return [position[r] for r in ids]


def split_recordings(spectrogram_dir: Path, split_path: Path, part: str, records_dir: Path) -> SplitRecordings:
    table = read_records(spectrogram_dir)
    rows = sorted(split_rows(table, spectrogram_dir, split_path, part))  # ascending, as a predictor scores them
    records = table["record"].to_numpy()[rows]
    signals = [read_recording(Path(records_dir) / f"{r}.mat") for r in records]
    return SplitRecordings(records, rows, table["class_index"].to_numpy()[rows], source_labels(table)[rows], signals)


def member_probs(ensemble: RhythmEnsemble, signals: list[Signal], rows: list[int], features: np.ndarray | None,
                 batch_size: int, device: torch.device | str) -> tuple[np.ndarray, np.ndarray]:
    """P(class) of each recording (``rows`` ascending) by each model: the network's through its
    Predictor, the trees' on ``features`` (None: computed from the samples the network sees, as the
    served ensemble does)."""
    network = ensemble.predictor.score(signals, rows, batch_size, device).probs.numpy()
    if features is None:
        preprocessing = ensemble.predictor.preprocessing
        features = feature_rows([preprocessing.samples_at_training_rate(s) for s in signals], preprocessing.fs)
    return network, ensemble.trees.predict_proba(features)


def ensemble_probs(ensemble: RhythmEnsemble, signals: list[Signal], rows: list[int], features: np.ndarray | None,
                   batch_size: int, device: torch.device | str) -> np.ndarray:
    """P(class) of each recording (``rows`` ascending): its two models' (:func:`member_probs`) combined."""
    return ensemble.combine(*member_probs(ensemble, signals, rows, features, batch_size, device))


def run_ensemble_train(params: Params, network: str, records_dir: Path, features_path: Path, spectrogram_dir: Path,
                       split_path: Path, network_dir: Path, out_dir: Path, metrics_path: Path) -> dict:
    """The `ensemble_train` stage of ``network``'s rhythm ensemble (its predictor: ``network_dir``):
    ``out_dir`` gets the ensemble (``ensemble/``) and its MLflow run (``mlflow_run.json``),
    ``metrics_path`` what it was fitted on."""
    import mlflow

    from ecgpipe.tracking import runs as tracking

    spec, name = ensemble_of(params, network), ensemble_name(network)
    tracking.check_store_file(tracking.tracking_uri())
    network_dir = Path(network_dir)
    predictor = Predictor.from_folder(network_dir)
    classes = list(params.spectrogram.classes)
    if list(predictor.class_names) != classes:
        raise StoreError(f"{network_dir}: the network's classes are {list(predictor.class_names)}; expected the task's "
                         f"{classes} (spectrogram.classes): rerun its stages")
    table = read_records(spectrogram_dir)
    train = split_rows(table, spectrogram_dir, split_path, "train")
    trees = BoostedTrees.fit(read_features(features_path, list(table["record"].to_numpy()[train])),
                             table["class_index"].to_numpy()[train], spec.seed)
    ensemble = RhythmEnsemble(predictor, trees, spec.network_weight)
    device = resolve_device(params.train.device)
    summary = {"train_recordings": len(train), "features": len(FEATURE_NAMES)}
    sensitivity = params.evaluate.af_sensitivity
    held_out_ids = read_json(split_path).get(CALIBRATION)
    if spec.combiner == LOGISTIC and not held_out_ids:
        raise ParamsError(f"params: ensembles.{network}.combiner: {LOGISTIC} is fitted on the recordings held out of "
                          f"training; expected split.calibration above 0 ({split_path} holds none)")
    if held_out_ids and (spec.combiner == LOGISTIC or (sensitivity is not None and AF in classes)):
        held_out = split_recordings(spectrogram_dir, split_path, CALIBRATION, records_dir)
        members = member_probs(ensemble, held_out.signals, held_out.rows,
                               read_features(features_path, list(held_out.records)), params.train.eval_batch_size,
                               device)
        summary["calibration_recordings"] = len(held_out.rows)
        if spec.combiner == LOGISTIC:  # its inputs are not the network's in-sample (over-confident) ones
            try:
                ensemble.combiner = LogisticCombiner.fit(*members, held_out.y, classes)
            except ValueError as exc:
                raise StoreError(f"{split_path}: {CALIBRATION}: {exc}; hold out more recordings "
                                 "(split.calibration)") from None
        if sensitivity is not None and AF in classes:  # on the same recordings: a double use, said in the docs
            probs = ensemble.combine(*members)
            ensemble.decision = decision_on(probs[:, classes.index(AF)], held_out.y == classes.index(AF), AF,
                                            sensitivity)
            summary[joined("threshold", AF)] = ensemble.decision.threshold
    spec_file = network_files(network_dir) / PREDICTOR_SPEC  # names the run that trained the network
    network_run = read_json(spec_file).get("run_id", "") if spec_file.is_file() else ""
    logged = {"experiment": name, "kind": KIND, "network": network, **dataclasses.asdict(spec),
              "network_run": network_run, "features": ",".join(FEATURE_NAMES),
              **{f"trees.{k}": v for k, v in SETTINGS.items()}, "classes": ",".join(classes),
              **({f"combiner.{k}": v for k, v in COMBINER_SETTINGS.items()} if spec.combiner == LOGISTIC else {}),
              "split.fold": params.split.fold, "split.calibration": params.split.calibration}
    # the machine's tags as the network's run has them: a study's report checks every fold was made alike
    tags = {**tracking.run_tags(device), "ecgpipe.kind": KIND,
            **study_tags(params.study.name, params.split.fold, params.train.seed)}
    with tracking.start_run(params.mlflow.experiment_name, name, logged, tags, system_metrics=False) as run:
        tracking.log_lineage([Path(features_path), Path(split_path)], None, "training")
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        run_info = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                    "tracking_uri": tracking.tracking_uri()}
    with staged_outputs() as staged:
        folder = staged.dir(out_dir)
        ensemble.save(folder / ARTIFACT, network_dir, {"run_id": run_info["run_id"], "network_run": network_run})
        (folder / RUN_FILE).write_text(json_text(run_info))
        staged.file(metrics_path).write_text(json_text(summary))
    return summary


def run_ensemble_evaluate(params: Params, network: str, records_dir: Path, features_path: Path,
                          spectrogram_dir: Path, split_path: Path, model_dir: Path, metrics_path: Path,
                          plots_dir: Path, predictor_dir: Path) -> dict:
    """The `ensemble_evaluate` stage of ``network``'s rhythm ensemble (``model_dir``: its train stage's):
    eval.json, the plots' tables and figures (as experiment NAME+rhythm), the servable ensemble
    (``predictor_dir``: an MLflow model) and the same into its MLflow run."""
    import mlflow

    from ecgpipe.ensemble.serving import model_kwargs
    from ecgpipe.reporting import plots
    from ecgpipe.tracking import pyfunc
    from ecgpipe.tracking import runs as tracking

    evaluate, device = params.evaluate, resolve_device(params.train.device)
    ensemble_of(params, network)
    name = ensemble_name(network)
    run_info = read_json(Path(model_dir) / RUN_FILE)
    tracking.check_store_file(run_info["tracking_uri"])
    folder = Path(model_dir) / ARTIFACT
    ensemble = RhythmEnsemble.from_folder(folder)
    classes = list(ensemble.class_names)
    positive = classes.index(positive_class(classes))
    bootstrap = bootstrap_of(evaluate)
    val = split_recordings(spectrogram_dir, split_path, "val", records_dir)
    probs = ensemble_probs(ensemble, val.signals, val.rows, read_features(features_path, list(val.records)),
                           params.train.eval_batch_size, device)
    labels = ensemble.labels(probs)
    record = {**score(val.y, probs, classes, val.sources, labels),
              "ci": confidence_intervals(val.y, probs, classes, bootstrap, val.sources, labels)}
    tables, figures = record_outputs(name, "val", val.records, val.y, probs, labels, classes, {RECORD: record})
    calibrated = None
    if read_json(split_path).get(CALIBRATION):  # its decision was fitted on them; no temperature of its own
        ece = calibration_figures(probs[:, positive], val.y == positive, bootstrap)
        calibrated = {"temperature": 1.0,
                      **({"decision": ensemble.decision.to_dict()} if ensemble.decision is not None else {}),
                      **ece, "ece_uncalibrated": ece["ece"]}
        figures["reliability_val.png"] = plots.reliability(calibrated, classes[positive], f"{name}: val, per recording")

    def shifted_probs(shift: str, signals: list[Signal]) -> np.ndarray:
        return ensemble_probs(ensemble, signals, val.rows, None, params.train.eval_batch_size, device)

    shifted = shifts_figures(shifted_probs, val.signals, val.rows, val.y, probs, classes, evaluate.shifts,
                             evaluate.shift_seed, bootstrap, ensemble.labels)
    evaluation = Evaluation(classes, {"val": {RECORD: record}}, {"val": tables}, figures, calibrated, shifted,
                            worst_shift(shifted, classes))
    example = val.signals[0].samples
    with tempfile.TemporaryDirectory() as tmp:
        summary = evaluation.write(name, metrics_path, plots_dir, lambda staged: mlflow.pyfunc.save_model(
            path=str(staged.dir(predictor_dir)), **model_kwargs(folder, example, Path(tmp) / "save")))
        evaluation.log(run_info, evaluate.shifts, lambda: mlflow.pyfunc.log_model(
            name=pyfunc.ARTIFACT, **model_kwargs(folder, example, Path(tmp) / "log")))
    return summary
