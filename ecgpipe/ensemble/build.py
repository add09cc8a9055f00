"""`ecgpipe ensemble fit`: the tree model fitted on a split's training recordings beside a trained
network; the ensemble saved as a servable MLflow model and judged on the split's validation
recordings as the pipeline judges an experiment: figures with intervals, paired against the network
alone, the device shifts of ``evaluate.shifts``, and the declared gate of ``report.gate``. Logged
as an MLflow run; registered (as ``@candidate-ensemble``) only when asked and only when it passes
the gate. Only ``ecgpipe promote`` and the workspace's ``dvc repro`` move ``@champion``."""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ecgpipe.core.errors import OutputError, StoreError
from ecgpipe.core.io import json_text, read_json, staged_outputs
from ecgpipe.core.results import (
    SHIFT_COLUMNS,
    figure,
    is_record_column,
    joined,
    mlflow_names,
    record_column,
    record_figure,
    worst_shift_columns,
)
from ecgpipe.data.records import load_recordings
from ecgpipe.ensemble.model import ARTIFACT, RhythmEnsemble, network_files
from ecgpipe.ensemble.rhythm import FEATURE_NAMES, FeatureCache, feature_table
from ecgpipe.ensemble.trees import SETTINGS, BoostedTrees
from ecgpipe.evaluation.metrics import Bootstrap, confidence_intervals, paired_difference, positive_class, score
from ecgpipe.evaluation.robustness import shifts_figures, worst_shift
from ecgpipe.inference.predictor import PREDICTOR_SPEC, Predictor
from ecgpipe.inference.readers import Signal
from ecgpipe.reporting.champion import gate_failures
from ecgpipe.signal.shifts import Shift

ALIAS = "candidate-ensemble"
VALIDATION_FILE, VALIDATION_TABLE = "validation.md", "validation.csv"
CANDIDATES = ("network", "rhythm", "ensemble")


@dataclass(frozen=True)
class Task:
    """The recordings a network was trained on (params.yaml's spectrogram values)."""

    classes: list[str]
    min_length: int
    max_length: int
    flat_records: str = "refuse"


@dataclass(frozen=True)
class Judging:
    """How the ensemble is judged: params.yaml's ``evaluate`` bootstrap and shifts, and ``report.gate``
    (results.csv column -> a check with ``at_least``/``at_most``)."""

    bootstrap: Bootstrap
    shifts: dict[str, Shift] = field(default_factory=dict)
    shift_seed: int = 0
    gate: dict = field(default_factory=dict)


def check_out_dir(out_dir: Path) -> None:
    """``out_dir`` is replaced whole: refuse a folder that holds anything but an earlier ensemble."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / "ensemble.json").is_file())):
        raise OutputError(f"{out_dir}: exists and is not an earlier `ecgpipe ensemble fit` output (no "
                          "ensemble.json); expected a new folder, which the command makes")


def headline_figures(class_names: list[str]) -> list[str]:
    """The figures the validation table gives, in the order of the project's reports."""
    per_class = [f"f1_{c}" for c in class_names]
    extra = ["challenge_score"] if {"N", "A", "O"} <= set(class_names) else []
    af = [f"af_specificity_at_sensitivity_95_{c}" for c in ("N", "O", "~")] if "rest" in class_names else []
    return [*extra, *per_class, "macro_f1", "roc_auc", "balanced_accuracy", *af]


def candidate_probs(ensemble: RhythmEnsemble, signals: list[Signal], keys: list[str], cache: FeatureCache,
                    what: str = "recordings") -> dict[str, np.ndarray]:
    """P(class) of every recording from the network, the trees and their mean: the parts of
    ``ensemble.predict_proba``, each recording through the same checks and resampling (its features
    from ``cache`` where it holds those of ``keys``)."""
    from tqdm import tqdm

    network, rhythm = [], []
    for signal, key in zip(tqdm(signals, desc=what, unit="recording"), keys):
        network.append(ensemble.predictor.predict_proba(signal))
        rhythm.append(ensemble.trees.predict_proba(ensemble.features(signal, cache, key))[0])
    network, rhythm = np.stack(network), np.stack(rhythm)
    return {"network": network, "rhythm": rhythm, "ensemble": ensemble.combine(network, rhythm)}


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
        if not name.startswith("af_specificity"):  # the per-label false alarms are not paired here
            diff = paired_difference(y, probs["ensemble"], probs["network"], class_names, name, bootstrap)
            row.update({"difference": diff.difference, "difference_ci_low": diff.low, "difference_ci_high": diff.high})
        rows.append(row)
    return pd.DataFrame(rows)


def shift_key(record: str, row: int, name: str, shift: Shift, seed: int) -> str:
    """A shifted recording's key in the feature cache: what its samples depend on, i.e. its record, the
    shift's name and settings, and the seed and row of its random draw (``shift_rng``; the row is the
    recording's place in its task, so another task's draw for the same record gets another key)."""
    settings = hashlib.sha256(repr(shift).encode()).hexdigest()[:12]
    return f"{record}|{name}|{settings}|{seed}|{row}"


def shift_table(ensemble: RhythmEnsemble, signals: list[Signal], records: list[str], rows: list[int], y: np.ndarray,
                clean: dict[str, np.ndarray], judging: Judging, cache: FeatureCache) -> pd.DataFrame:
    """One row per candidate and shift: F1 of the positive class, its paired change, and ROC AUC, from
    the evaluate stage's loop over the shifts (``shifts_figures``: shift ``name`` draws for recording
    ``row`` what the evaluate stage draws for it). The candidates are scored together, once per shift."""
    classes = ensemble.class_names
    positive = positive_class(classes)
    scored: dict[str, dict[str, np.ndarray]] = {}

    def candidate(which: str):
        def score(name: str, shifted: list[Signal]) -> np.ndarray:
            if name not in scored:  # the network and the trees score a shift once for all three candidates
                keys = [shift_key(r, row, name, judging.shifts[name], judging.shift_seed) for r, row in zip(records, rows)]
                scored[name] = candidate_probs(ensemble, shifted, keys, cache, f"shift {name}")
                cache.save()
            return scored[name][which]
        return score

    figures = {c: shifts_figures(candidate(c), signals, rows, y, clean[c], classes, judging.shifts, judging.shift_seed,
                                 judging.bootstrap) for c in CANDIDATES}
    out = []
    for name in judging.shifts:
        for c in CANDIDATES:
            f = figures[c][name]
            change = f["change"][f"f1_{positive}"]
            out.append({"candidate": c, "shift": name, f"f1_{positive}": f["f1"][positive],
                        f"f1_{positive}_change": change[0], "change_ci_low": change[1], "change_ci_high": change[2],
                        "roc_auc": f["roc_auc"], "_figures": f})
    return pd.DataFrame(out)


def gate_rows(table: pd.DataFrame, shifts: pd.DataFrame, class_names: list[str], gate: dict) -> pd.DataFrame:
    """Each candidate as the report's results.csv would have it (the columns a gate may name), and
    the declared gate's verdict on it."""
    rows = []
    for candidate in CANDIDATES:
        row = {"candidate": candidate, "robust": 1,
               **{record_column(f): table.set_index("figure").loc[f, candidate] for f in table["figure"]}}
        if len(shifts):
            mine = shifts[shifts["candidate"] == candidate]
            worst = worst_shift({r["shift"]: r["_figures"] for _, r in mine.iterrows()}, class_names)
            row.update(worst_shift_columns(worst, positive_class(class_names)))
        failures = gate_failures(pd.Series(row).reindex(list(gate)), gate)
        rows.append({**row, "gate": "passes" if not failures else "fails: " + "; ".join(failures)})
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame, gates: pd.DataFrame, shifts: pd.DataFrame, network: str, n: int,
              judging: Judging) -> str:
    def cell(row, name):
        return f"{row[name]:.3f} [{row[f'{name}_ci_low']:.3f}–{row[f'{name}_ci_high']:.3f}]"

    lines = ["| figure | network | rhythm features | ensemble | ensemble − network |", "| --- | --- | --- | --- | --- |"]
    for _, row in table.iterrows():
        if pd.isna(row.get("difference", np.nan)):
            diff = "–"
        else:
            real = " (beyond noise)" if row["difference_ci_low"] > 0 or row["difference_ci_high"] < 0 else ""
            diff = f"{row['difference']:+.3f} [{row['difference_ci_low']:+.3f}, {row['difference_ci_high']:+.3f}]{real}"
        lines.append(f"| {row['figure']} | {cell(row, 'network')} | {cell(row, 'rhythm')} | {cell(row, 'ensemble')} "
                     f"| {diff} |")
    b = judging.bootstrap
    text = (f"# The rhythm ensemble against its network on the validation recordings\n\n"
            f"Network: `{network}`. Ensemble: the mean of its probabilities and a gradient-boosted model's on "
            f"{len(FEATURE_NAMES)} rhythm features (`rhythm features`), fitted on the split's training recordings. "
            f"{n:,} validation recordings, each scored through the saved model's own checks and resampling; "
            f"{b.confidence:.0%} stratified bootstrap intervals ({b.resamples:,} resamples), the difference paired on "
            "the same resamples. Nothing was chosen on these recordings.\n\n" + "\n".join(lines) + "\n")
    if len(shifts):
        worst = [c for c in gates if c.startswith(SHIFT_COLUMNS)]
        text += (f"\n## Under the device shifts (evaluate.shifts: {len(judging.shifts)})\n\n"
                 "| candidate | " + " | ".join(worst) + " |\n|" + " --- |" * (len(worst) + 1) + "\n" + "".join(
                     f"| {r['candidate']} | " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c])
                                                          for c in worst) + " |\n" for _, r in gates.iterrows()))
    checks = ", ".join(f"{k} {'≥ ' + format(v.at_least, 'g') if v.at_least is not None else '≤ ' + format(v.at_most, 'g')}"
                       for k, v in judging.gate.items()) or "none declared"
    text += (f"\n## The declared gate (report.gate: {checks})\n\n" + "".join(
        f"- {r['candidate']}: {r['gate']}\n" for _, r in gates.iterrows()))
    return text


def fit_ensemble(network_dir: Path, records_dir: Path, split_path: Path, out_dir: Path, task: Task,
                 judging: Judging, seed: int, experiment_name: str, registered_model: str | None = None,
                 features_cache: Path | None = None) -> dict:
    """Fit, save into ``out_dir`` (``model/``: the MLflow model; ``validation.md``/``.csv``), log, and
    register under ``registered_model`` if given and the ensemble passes the gate. Returns what was made."""
    import mlflow

    from ecgpipe.ensemble.serving import model_kwargs
    from ecgpipe.tracking import runs as tracking
    from ecgpipe.tracking.registry import tag_alias_move

    check_out_dir(out_dir)
    tracking.check_store_file(tracking.tracking_uri())  # before minutes of features, not after
    network = Predictor.from_folder(network_dir)
    if list(network.class_names) != list(task.classes):
        raise StoreError(f"{network_dir}: the network's classes are {network.class_names}; expected the task's "
                         f"{task.classes} (spectrogram.classes of the params given)")
    split = read_json(split_path)
    recordings = load_recordings(records_dir, task.classes, task.min_length, task.max_length, task.flat_records)
    # rows in record-id order: those of the spectrogram stage's records.csv, which the shifts' draws use
    position = {r: i for i, r in enumerate(recordings.record_ids)}
    missing = [r for part in ("train", "val") for r in split[part] if r not in position]
    if missing:
        raise StoreError(f"{split_path}: {len(missing)} recording(s) not among the task's recordings (e.g. "
                         f"{missing[0]}); expected the split made with the same spectrogram params")
    cache = FeatureCache(features_cache)
    features = feature_table(recordings, cache)
    train, val = [position[r] for r in split["train"]], [position[r] for r in split["val"]]
    trees = BoostedTrees.fit(features.loc[split["train"], list(FEATURE_NAMES)].to_numpy(np.float64),
                             recordings.labels[train], seed)
    spec = network_files(network_dir) / PREDICTOR_SPEC  # names the run that trained the network
    network_run = read_json(spec).get("run_id", "") if spec.is_file() else ""
    signals = [Signal(recordings.signals[i, : recordings.lengths[i]], network.fs) for i in val]
    y, sources = recordings.labels[val], np.asarray(recordings.source_labels)[val]
    del recordings, features
    params = {"network": str(network_dir), "network_run": network_run, "network_weight": 0.5,
              "features": ",".join(FEATURE_NAMES), "trees_seed": seed, **{f"trees.{k}": v for k, v in SETTINGS.items()},
              "classes": ",".join(task.classes), "min_length": task.min_length, "train_recordings": len(train),
              "val_recordings": len(val), "shifts": ",".join(judging.shifts), "shift_seed": judging.shift_seed}
    with tracking.start_run(experiment_name, f"ensemble-{Path(network_dir).name}", params,
                            {"ecgpipe.kind": "rhythm-ensemble"}, system_metrics=False) as run, \
            tempfile.TemporaryDirectory() as tmp:
        folder = RhythmEnsemble(network, trees).save(Path(tmp) / ARTIFACT, network_dir,
                                                     {"run_id": run.info.run_id, "network_run": network_run})
        ensemble = RhythmEnsemble.from_folder(folder)  # judged as it was saved
        probs = candidate_probs(ensemble, signals, split["val"], cache, "validation")
        table = validation_table(y, probs, ensemble.class_names, sources, judging.bootstrap)
        shifts = shift_table(ensemble, signals, split["val"], val, y, probs, judging, cache)
        gates = gate_rows(table, shifts, ensemble.class_names, judging.gate)
        for _, row in gates.iterrows():
            prefix = joined("val", "" if row["candidate"] == "ensemble" else row["candidate"])
            mlflow.log_metrics(mlflow_names({joined(prefix, record_figure(k) if is_record_column(k) else k): float(v)
                                             for k, v in row.items() if isinstance(v, float | int) and k != "robust"}))
        verdict = gates.set_index("candidate").loc["ensemble", "gate"]
        mlflow.set_tag("ecgpipe.gate", verdict)
        info = mlflow.pyfunc.log_model(name=ARTIFACT, **model_kwargs(folder, signals[0].samples, Path(tmp) / "log"))
        registered = None
        if registered_model is not None and verdict == "passes":
            client = mlflow.MlflowClient()
            version = mlflow.register_model(info.model_uri, registered_model).version
            client.set_registered_model_alias(registered_model, ALIAS, version)
            tag_alias_move(client, registered_model, version, ALIAS, "ecgpipe ensemble fit",
                            f"rhythm ensemble of {network_dir}; the declared gate passes")
            registered = {"registered_model": registered_model, "version": int(version), "alias": ALIAS,
                          "model_uri": f"models:/{registered_model}@{ALIAS}"}
        with staged_outputs() as staged:
            target = staged.dir(Path(out_dir))
            mlflow.pyfunc.save_model(path=str(target / "model"),
                                     **model_kwargs(folder, signals[0].samples, Path(tmp) / "save"))
            (target / VALIDATION_FILE).write_text(_markdown(table, gates, shifts, str(network_dir), len(val), judging))
            table.to_csv(target / VALIDATION_TABLE, index=False, float_format="%.4f")
            if len(shifts):
                shifts.drop(columns="_figures").to_csv(target / "shifts.csv", index=False, float_format="%.4f")
            gates.to_csv(target / "gate.csv", index=False, float_format="%.4f")
            (target / "ensemble.json").write_text(json_text({
                "run_id": run.info.run_id, "model_uri": info.model_uri, "gate": verdict,
                "registered": registered if registered_model is None or registered else
                f"not registered: the declared gate {verdict}"}))
    return {"run_id": run.info.run_id, "model_uri": info.model_uri, "registered": registered, "gate": verdict,
            "out": str(out_dir), "validation": table, "gates": gates}
