"""`ecgpipe ensemble fit`: the tree model fitted on a split's training recordings, beside a trained
network; the ensemble saved as a servable MLflow model, scored on the split's validation recordings
through that model's own path against the network alone (paired bootstrap), logged as an MLflow
run, and, when asked, registered (as ``@candidate-ensemble``: only ``ecgpipe promote`` and the
workspace's ``dvc repro`` move ``@champion``)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecgpipe.core.errors import OutputError, StoreError
from ecgpipe.core.io import json_text, read_json, staged_outputs
from ecgpipe.data.records import load_recordings
from ecgpipe.ensemble.model import ARTIFACT, RhythmEnsemble, network_files
from ecgpipe.ensemble.rhythm import FEATURE_NAMES, feature_table
from ecgpipe.ensemble.trees import SETTINGS, BoostedTrees
from ecgpipe.evaluation.metrics import (
    Bootstrap,
    confidence_intervals,
    figure,
    paired_difference,
    score,
)
from ecgpipe.inference.predictor import PREDICTOR_SPEC, Predictor
from ecgpipe.inference.readers import Signal

ALIAS = "candidate-ensemble"
VALIDATION_FILE, VALIDATION_TABLE = "validation.md", "validation.csv"


@dataclass(frozen=True)
class Task:
    """The recordings a network was trained on (params.yaml's spectrogram values)."""

    classes: list[str]
    min_length: int
    max_length: int
    flat_records: str = "refuse"


def headline_figures(class_names: list[str]) -> list[str]:
    """The figures the validation table gives, in the order of the project's reports."""
    per_class = [f"f1_{c}" for c in class_names]
    extra = ["challenge_score"] if {"N", "A", "O"} <= set(class_names) else []
    af = [f"af_specificity_at_sensitivity_95_{c}" for c in ("N", "O", "~")] if "rest" in class_names else []
    return [*extra, *per_class, "macro_f1", "roc_auc", "balanced_accuracy", *af]


def validation_scores(ensemble: RhythmEnsemble, signals: list[Signal]) -> tuple[np.ndarray, np.ndarray]:
    """(network, ensemble) probabilities of every recording, each through its served path."""
    from tqdm import tqdm

    network = np.stack([ensemble.predictor.predict_proba(s) for s in signals])
    both = np.stack([ensemble.predict_proba(s) for s in tqdm(signals, desc="ensemble", unit="recording")])
    return network, both


def validation_table(y: np.ndarray, probs: dict[str, np.ndarray], class_names: list[str], sources: np.ndarray,
                     bootstrap: Bootstrap) -> pd.DataFrame:
    """One row per figure: each candidate with its interval, and ensemble − network, paired."""
    rows = []
    points = {name: score(y, p, class_names, sources) for name, p in probs.items()}
    intervals = {name: confidence_intervals(y, p, class_names, bootstrap, sources) for name, p in probs.items()}
    for name in headline_figures(class_names):
        row = {"figure": name}
        for candidate in probs:
            low, high = figure(intervals[candidate], name)
            row.update({candidate: float(figure(points[candidate], name)), f"{candidate}_ci_low": low,
                        f"{candidate}_ci_high": high})
        if not name.startswith("af_specificity"):  # per-label figures are not among the paired ones
            diff = paired_difference(y, probs["ensemble"], probs["network"], class_names, name, bootstrap)
            row.update({"difference": diff.difference, "difference_ci_low": diff.low, "difference_ci_high": diff.high})
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame, network: str, n: int, bootstrap: Bootstrap) -> str:
    def cell(row, name):
        return f"{row[name]:.3f} [{row[f'{name}_ci_low']:.3f}–{row[f'{name}_ci_high']:.3f}]"

    lines = ["| figure | network | ensemble | ensemble − network |", "| --- | --- | --- | --- |"]
    for _, row in table.iterrows():
        if pd.isna(row.get("difference", np.nan)):
            diff = "–"
        else:
            real = " (beyond noise)" if row["difference_ci_low"] > 0 or row["difference_ci_high"] < 0 else ""
            diff = f"{row['difference']:+.3f} [{row['difference_ci_low']:+.3f}, {row['difference_ci_high']:+.3f}]{real}"
        lines.append(f"| {row['figure']} | {cell(row, 'network')} | {cell(row, 'ensemble')} | {diff} |")
    return (f"# The rhythm ensemble against its network on the validation recordings\n\n"
            f"Network: `{network}`. Ensemble: the mean of its probabilities and a gradient-boosted model's on "
            f"{len(FEATURE_NAMES)} rhythm features, fitted on the split's training recordings. {n:,} validation "
            f"recordings, each scored through the saved model's own path; {bootstrap.confidence:.0%} stratified "
            f"bootstrap intervals ({bootstrap.resamples:,} resamples), the difference paired on the same resamples. "
            "Nothing was chosen on these recordings.\n\n" + "\n".join(lines) + "\n")


def check_out_dir(out_dir: Path) -> None:
    """``out_dir`` is replaced whole: refuse a folder that holds anything but an earlier ensemble."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / "ensemble.json").is_file())):
        raise OutputError(f"{out_dir}: exists and is not an earlier `ecgpipe ensemble fit` output (no "
                          "ensemble.json); expected a new folder, which the command makes")


def fit_ensemble(network_dir: Path, records_dir: Path, split_path: Path, out_dir: Path, task: Task,
                 bootstrap: Bootstrap, seed: int, experiment_name: str, registered_model: str | None = None,
                 features_cache: Path | None = None) -> dict:
    """Fit, save into ``out_dir`` (``model/``: the MLflow model; ``validation.md``/``.csv``), log,
    and register under ``registered_model`` if given. Returns what was made."""
    import mlflow

    from ecgpipe.ensemble.serving import model_kwargs
    from ecgpipe.tracking import runs as tracking
    from ecgpipe.tracking.registry import _tag_alias_move

    check_out_dir(out_dir)
    tracking.check_store_file(tracking.tracking_uri())  # before minutes of features, not after
    network = Predictor.from_folder(network_dir)
    if list(network.class_names) != list(task.classes):
        raise StoreError(f"{network_dir}: the network's classes are {network.class_names}; expected the task's "
                         f"{task.classes} (spectrogram.classes of the params given)")
    split = read_json(split_path)
    recordings = load_recordings(records_dir, task.classes, task.min_length, task.max_length, task.flat_records)
    features = feature_table(recordings, features_cache)
    position = {r: i for i, r in enumerate(recordings.record_ids)}
    missing = [r for part in ("train", "val") for r in split[part] if r not in position]
    if missing:
        raise StoreError(f"{split_path}: {len(missing)} recording(s) not among the task's recordings (e.g. "
                         f"{missing[0]}); expected the split made with the same spectrogram params")
    train = [position[r] for r in split["train"]]
    x = features.loc[split["train"], list(FEATURE_NAMES)].to_numpy(np.float64)
    trees = BoostedTrees.fit(x, recordings.labels[train], seed)
    spec = network_files(network_dir) / PREDICTOR_SPEC  # names the run that trained the network
    network_run = read_json(spec).get("run_id", "") if spec.is_file() else ""

    val = [position[r] for r in split["val"]]
    signals = [Signal(recordings.signals[i, : recordings.lengths[i]], network.fs) for i in val]
    y, sources = recordings.labels[val], np.asarray(recordings.source_labels)[val]
    del recordings
    params = {"network": str(network_dir), "network_run": network_run, "network_weight": 0.5,
              "features": ",".join(FEATURE_NAMES), "trees_seed": seed, **{f"trees.{k}": v for k, v in SETTINGS.items()},
              "classes": ",".join(task.classes), "min_length": task.min_length,
              "train_recordings": len(train), "val_recordings": len(val)}
    with tracking.start_run(experiment_name, f"ensemble-{Path(network_dir).name}", params,
                            {"ecgpipe.kind": "rhythm-ensemble"}, system_metrics=False) as run, \
            tempfile.TemporaryDirectory() as tmp:
        folder = RhythmEnsemble(network, trees).save(Path(tmp) / ARTIFACT, network_dir,
                                                     {"run_id": run.info.run_id, "network_run": network_run})
        ensemble = RhythmEnsemble.from_folder(folder)
        net_probs, ens_probs = validation_scores(ensemble, signals)
        table = validation_table(y, {"network": net_probs, "ensemble": ens_probs}, ensemble.class_names, sources,
                                 bootstrap)
        metrics = {f"val_{row['figure']}": row["ensemble"] for _, row in table.iterrows()}
        metrics.update({f"val_network_{row['figure']}": row["network"] for _, row in table.iterrows()})
        mlflow.log_metrics({k.replace("~", "noise"): float(v) for k, v in metrics.items()})
        kwargs = model_kwargs(folder, signals[0].samples, Path(tmp))
        info = mlflow.pyfunc.log_model(name=ARTIFACT, **kwargs)
        registered = None
        if registered_model is not None:
            client = mlflow.MlflowClient()
            version = mlflow.register_model(info.model_uri, registered_model).version
            client.set_registered_model_alias(registered_model, ALIAS, version)
            _tag_alias_move(client, registered_model, version, ALIAS, "ecgpipe ensemble fit",
                            f"rhythm ensemble of {network_dir}")
            registered = {"registered_model": registered_model, "version": int(version), "alias": ALIAS,
                          "model_uri": f"models:/{registered_model}@{ALIAS}"}
        with staged_outputs() as staged:
            target = staged.dir(Path(out_dir))
            mlflow.pyfunc.save_model(path=str(target / "model"), **model_kwargs(folder, signals[0].samples, Path(tmp) / "again"))
            (target / VALIDATION_FILE).write_text(_markdown(table, str(network_dir), len(val), bootstrap))
            table.to_csv(target / VALIDATION_TABLE, index=False, float_format="%.4f")
            (target / "ensemble.json").write_text(json_text({"run_id": run.info.run_id, "model_uri": info.model_uri,
                                                             "registered": registered}))
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "registered": registered,
            "out": str(out_dir), "validation": table}
