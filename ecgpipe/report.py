"""The `report` stage: every experiment's figures in one table, beside the notebook's own."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecgpipe.io import json_text, read_json, staged_outputs
from ecgpipe.params import Params, ParamsError
from ecgpipe.stats import Bootstrap, figure, paired_difference, positive_class

# The notebook's balanced validation chunk accuracy (its only figure), by (model, loader).
NOTEBOOK_BALANCED_CHUNK_ACC = {
    ("mean_spectrum", "chunked"): 0.572, ("mean_spectrum", "random_chunk"): 0.567,
    ("fully_connected", "chunked"): 0.776, ("fully_connected", "random_chunk"): 0.800,
    ("conv", "chunked"): 0.860, ("conv", "random_chunk"): 0.872,
    ("rnn", "chunked"): 0.499,
    ("lstm", "chunked"): 0.900,
    ("torch_lstm", "chunked"): 0.905, ("torch_lstm", "random_chunk"): 0.930,
}
COMPARED = ["balanced_chunk_acc", "record_acc", "record_balanced_acc", "record_f1_A", "record_macro_f1", "record_roc_auc"]


SHIFT_COLUMNS = ("worst_shift", "min_shift_")  # results.csv columns shown in the shift section instead

# results.csv column -> the recording-level figure in eval.json (its interval is under "ci")
RECORD_COLUMNS = {"record_acc": "accuracy", "record_balanced_acc": "balanced_accuracy", "record_macro_f1": "macro_f1",
                  "record_roc_auc": "roc_auc", "record_average_precision": "average_precision",
                  "record_challenge_score": "challenge_score"}


def record_figure(column: str) -> str:
    """The flat figure name (``f1_A``, ``roc_auc``) of a ``record_*`` column of results.csv."""
    return RECORD_COLUMNS.get(column, column.removeprefix("record_"))


def notebook_figure(params: Params, model: str, loader: str) -> float | None:
    """The notebook's figure for this model and loader, where the task is the notebook's (N and A,
    recordings of at least 4,000 samples); None otherwise, where it compares with nothing."""
    notebook_task = params.spectrogram.classes == ["N", "A"] and params.spectrogram.min_length == 4000
    return NOTEBOOK_BALANCED_CHUNK_ACC.get((model, loader)) if notebook_task else None


def class_mix(params: Params, metrics_dir: Path, split: str = "val") -> str:
    """The recordings' class mix on ``split``, e.g. ``N 87%, A 13%``, from the first experiment's scores."""
    name = next(iter(params.experiments))
    support = read_json(Path(metrics_dir) / name / "eval.json")[split]["record"]["support"]
    total = sum(support.values())
    return ", ".join(f"{c} {n / total:.0%}" for c, n in support.items())


def experiment_row(name: str, params: Params, metrics_dir: Path, split: str = "val") -> dict:
    experiment = params.experiment(name)
    eval_json = read_json(Path(metrics_dir) / name / "eval.json")
    evaluation = eval_json[split]
    speed = read_json(Path(metrics_dir) / name / "speed.json")
    record = evaluation["record"]
    row = {
        "experiment": name,
        "model": experiment.model,
        "loader": experiment.loader,
        "epochs": experiment.epochs,
        "notebook_balanced_chunk_acc": notebook_figure(params, experiment.model, experiment.loader),
        "balanced_chunk_acc": evaluation["chunk_balanced"]["accuracy"],
        "chunk_acc": evaluation["chunk"]["accuracy"],
        "record_acc": record["accuracy"],
        "record_balanced_acc": record["balanced_accuracy"],
        **{f"record_f1_{c}": f1 for c, f1 in record["f1"].items()},
        "record_macro_f1": record["macro_f1"],
        "record_roc_auc": record["roc_auc"],
        "record_average_precision": record["average_precision"],
    }
    if "challenge_score" in record:
        row["record_challenge_score"] = record["challenge_score"]
    row["train_examples_per_s"] = speed["examples_per_s"]  # the median epoch's
    if "ci" in record:  # each record_* figure's interval, as <column>_ci_low / _ci_high
        for column in [c for c in row if c.startswith("record_")]:
            interval = figure(record["ci"], record_figure(column))
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = interval
    worst = eval_json.get(f"{split}_worst_shift")
    if worst is not None:  # robustness beside the clean figures; the champion is chosen on the clean ones
        positive = f"f1_{positive_class(list(record['f1']))}"
        row.update({"worst_shift": worst["shift"], f"worst_shift_{positive}": worst[positive],
                    f"worst_shift_{positive}_change": worst[f"{positive}_change"],
                    "min_shift_roc_auc": worst["min_roc_auc"]})
    return row


def shift_table(params: Params, metrics_dir: Path, split: str = "val") -> pd.DataFrame | None:
    """One row per experiment and shift: F1 of the positive class and its paired change from the
    unshifted figure, ROC AUC, sensitivity and specificity, each with its interval."""
    rows = []
    for name in params.experiments:
        shifts = read_json(Path(metrics_dir) / name / "eval.json").get(f"{split}_shifts", {})
        for shift, figures in shifts.items():
            positive = positive_class(list(figures["f1"]))
            change = figures["change"][f"f1_{positive}"]
            auc_change = figures["change"]["roc_auc"]
            rows.append({
                "experiment": name, "shift": shift, "positive": positive,
                "f1": figures["f1"][positive], "f1_ci_low": figures["ci"]["f1"][positive][0],
                "f1_ci_high": figures["ci"]["f1"][positive][1],
                "f1_change": change[0], "f1_change_ci_low": change[1], "f1_change_ci_high": change[2],
                "roc_auc": figures["roc_auc"], "roc_auc_ci_low": figures["ci"]["roc_auc"][0],
                "roc_auc_ci_high": figures["ci"]["roc_auc"][1],
                "roc_auc_change": auc_change[0], "roc_auc_change_ci_low": auc_change[1],
                "roc_auc_change_ci_high": auc_change[2],
                "sensitivity": figures["recall"][positive], "specificity": figures["specificity"][positive],
            })
    return pd.DataFrame(rows) if rows else None


def _robust_section(versus: pd.DataFrame | None, metric: str) -> str:
    if versus is None:
        return ""
    return (f"\n### Robust against plain\n\nEach experiment with robustness options against each plain one of the "
            f"same network: `difference` is robust − plain in `{metric}` on the unshifted recordings (paired "
            "bootstrap; an interval that includes 0 is within noise), beside both worst-shift figures.\n\n"
            + to_markdown(versus))


def _shift_section(shifts: pd.DataFrame | None, table: pd.DataFrame) -> str:
    """Experiment x shift tables of F1 (with its change) and ROC AUC, and each experiment's worst shift."""
    if shifts is None:
        return ""
    positive = shifts["positive"].iloc[0]

    def wide(value: str, change: str | None) -> pd.DataFrame:
        cells = shifts.apply(lambda r: f"{r[value]:.3f}" + (f" ({r[change]:+.3f})" if change else ""), axis=1)
        out = shifts.assign(cell=cells).pivot(index="experiment", columns="shift", values="cell")
        return out.loc[[e for e in table["experiment"] if e in out.index], list(dict.fromkeys(shifts["shift"]))]

    worst = table.set_index("experiment")[["worst_shift", f"worst_shift_f1_{positive}",
                                           f"worst_shift_f1_{positive}_change", "min_shift_roc_auc"]]
    return (f"\n## Under device shifts\n\nThe validation recordings scored again under each shift of "
            f"`evaluate.shifts`, one at a time, through `ecgpipe predict`'s path (README, \"Recordings from other "
            f"devices\"). F1 of {positive} per recording, with its paired change from the unshifted figure in "
            f"brackets (`reports/shifts.csv` has every interval):\n\n"
            + to_markdown(wide("f1", "f1_change").reset_index())
            + "\nROC AUC per recording:\n\n" + to_markdown(wide("roc_auc", None).reset_index())
            + f"\nEach experiment's worst shift (lowest F1 of {positive}), and its lowest ROC AUC under any shift. "
            "The champion is chosen on the unshifted figures; these are shown beside it:\n\n"
            + to_markdown(worst.reset_index()))


def results_table(params: Params, metrics_dir: Path, split: str = "val") -> pd.DataFrame:
    return pd.DataFrame([experiment_row(name, params, metrics_dir, split) for name in params.experiments])


def _cell(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown table; a column with ``_ci_low``/``_ci_high`` beside it shows ``0.957 [0.930–0.980]``
    (``-0.041 [-0.079, -0.006]`` when the interval reaches below 0)."""
    shown = [c for c in table.columns if not c.endswith(("_ci_low", "_ci_high"))]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, row in table.iterrows():
        cells = []
        for column in shown:
            text = _cell(row[column])
            if f"{column}_ci_low" in table and not pd.isna(row[f"{column}_ci_low"]):
                low, high = row[f"{column}_ci_low"], row[f"{column}_ci_high"]
                text += f" [{low:.3f}–{high:.3f}]" if low >= 0 else f" [{low:.3f}, {high:.3f}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CHAMPION = "champion"


def register_champion(table: pd.DataFrame, metric: str, models_dir: Path, registered_model: str) -> dict:
    """Register the best experiment's predictor in the MLflow Model Registry with the alias
    ``champion``; a new version only when the champion's run changed."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ecgpipe.experiment import RUN_FILE
    from ecgpipe.serving import ARTIFACT
    from ecgpipe.tracking import check_store_file

    best = table.loc[table[metric].astype(float).idxmax()]
    run = read_json(Path(models_dir) / best["experiment"] / RUN_FILE)
    check_store_file(run["tracking_uri"])
    mlflow.set_tracking_uri(run["tracking_uri"])
    client = MlflowClient()
    try:
        current = client.get_model_version_by_alias(registered_model, CHAMPION)
    except mlflow.exceptions.MlflowException:
        current = None
    if current is not None and current.run_id == run["run_id"]:
        version = current.version
    else:
        version = mlflow.register_model(f"runs:/{run['run_id']}/{ARTIFACT}", registered_model).version
        client.set_registered_model_alias(registered_model, CHAMPION, version)
    return {"experiment": best["experiment"], metric: float(best[metric]), "run_id": run["run_id"],
            "registered_model": registered_model, "version": int(version),
            "model_uri": f"models:/{registered_model}@{CHAMPION}"}


def validation_probabilities(name: str, plots_dir: Path, models_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(record ids, labels, probabilities, class names) of experiment NAME's validation recordings,
    sorted by record, from what its evaluate stage wrote (``plots/confusion/NAME/val.csv``)."""
    from ecgpipe.experiment import SPEC_FILE

    classes = read_json(Path(models_dir) / name / SPEC_FILE)["class_names"]
    frame = pd.read_csv(Path(plots_dir) / "confusion" / name / "val.csv", dtype={"record": str})
    frame = frame.sort_values("record")  # the same recordings in the same order for every experiment
    y = frame["actual"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return frame["record"].to_numpy(), y, frame[[f"p_{c}" for c in classes]].to_numpy(), classes


def paired_validation_difference(a: str, b: str, figure_name: str, plots_dir: Path, models_dir: Path,
                                 bootstrap: Bootstrap):
    """``a - b`` of one recording-level figure on the same validation recordings (paired bootstrap)."""
    ids, y, probs_a, classes = validation_probabilities(a, plots_dir, models_dir)
    ids_b, _, probs_b, classes_b = validation_probabilities(b, plots_dir, models_dir)
    if not (np.array_equal(ids, ids_b) and classes == classes_b):
        raise ValueError(f"{a} and {b} were not evaluated on the same validation recordings and classes; rerun "
                         "their evaluate stages")
    return paired_difference(y, probs_a, probs_b, classes, figure_name, bootstrap)


def robust_against_plain(params: Params, table: pd.DataFrame, metric: str, plots_dir: Path, models_dir: Path,
                         bootstrap: Bootstrap) -> pd.DataFrame | None:
    """Each experiment with robustness options against each plain experiment of the same network:
    the paired difference of ``metric`` on the unshifted recordings (what robustness costs or buys
    on clean data) and both worst-shift figures (what it buys under shift)."""
    if not metric.startswith("record_") or "worst_shift" not in table:
        return None
    by_name = table.set_index("experiment")
    positive = f"f1_{positive_class(params.spectrogram.classes)}"
    rows = []
    for robust in [n for n in params.experiments if params.experiments[n].robust]:
        model = params.experiments[robust].model
        for plain in [n for n, e in params.experiments.items() if e.model == model and not e.robust]:
            diff = paired_validation_difference(robust, plain, record_figure(metric), plots_dir, models_dir, bootstrap)
            rows.append({"robust": robust, "plain": plain, f"{metric}_robust": by_name.loc[robust, metric],
                         f"{metric}_plain": by_name.loc[plain, metric], "difference": diff.difference,
                         "difference_ci_low": diff.low, "difference_ci_high": diff.high,
                         f"worst_shift_{positive}_robust": by_name.loc[robust, f"worst_shift_{positive}"],
                         f"worst_shift_{positive}_plain": by_name.loc[plain, f"worst_shift_{positive}"]})
    return pd.DataFrame(rows) if rows else None


def paired_comparisons(table: pd.DataFrame, metric: str, plots_dir: Path, models_dir: Path,
                       bootstrap: Bootstrap) -> pd.DataFrame | None:
    """Each experiment against the champion on ``metric`` (a ``record_*`` column): the paired
    bootstrap difference ``experiment - champion`` over the same validation recordings, from the
    per-recording probabilities that the evaluate stages wrote (``plots/confusion/NAME/val.csv``).
    None for a chunk-level metric, whose units are not the recordings."""
    if not metric.startswith("record_"):
        return None
    champion = table.loc[table[metric].astype(float).idxmax(), "experiment"]
    rows = []
    for name in table["experiment"]:
        diff = paired_validation_difference(name, champion, record_figure(metric), plots_dir, models_dir, bootstrap)
        verdict = ("champion" if name == champion else "worse" if diff.high < 0
                   else "better" if diff.low > 0 else "not distinguishable")
        rows.append({"experiment": name, "difference": diff.difference, "difference_ci_low": diff.low,
                     "difference_ci_high": diff.high, "verdict": verdict})
    return pd.DataFrame(rows)


def score_champion_on_test(params: Params, champion: str, models_dir: Path, chunks_dir: Path,
                           spectrogram_dir: Path, records_dir: Path) -> dict | None:
    """The champion's figures on the held-out test recordings (those of ``chunks/test.pt``), with
    intervals; None without a test split. Only the champion is scored there, once, after it was
    chosen on validation, so that the test figures are not a second round of selection."""
    from ecgpipe.evaluation import score_saved_model

    if not (Path(chunks_dir) / "test.pt").is_file():
        return None
    _, _, scores = score_saved_model(params, Path(models_dir) / champion, "test", records_dir, spectrogram_dir,
                                     chunks_dir)
    return scores


def _comparison_section(paired: pd.DataFrame | None, table: pd.DataFrame, metric: str, bootstrap: Bootstrap) -> str:
    if paired is None:
        return (f"\n## Compared with the champion\n\nThe champion metric `{metric}` is a chunk-level figure: "
                "the paired bootstrap over recordings applies to `record_*` metrics only.\n")
    champion = paired.loc[paired["verdict"] == "champion", "experiment"].iloc[0]
    merged = table[["experiment", metric, f"{metric}_ci_low", f"{metric}_ci_high"]].merge(paired, on="experiment")
    tied = paired.loc[paired["verdict"] == "not distinguishable", "experiment"].tolist()
    level = f"{bootstrap.confidence:.0%}"
    text = (f"\n## Compared with the champion\n\n"
            f"The champion, `{champion}`, has the highest `{metric}` on validation. Each experiment's difference "
            f"from it is measured on the same recordings by a paired bootstrap ({bootstrap.resamples:,} stratified "
            f"resamples, {level} interval): an interval below 0 means worse than the champion beyond the noise of "
            "this validation set.\n\n" + to_markdown(merged) + "\n")
    if tied:
        text += (f"**Not distinguishable from the champion** at {level} (their intervals include 0): "
                 + ", ".join(f"`{n}`" for n in tied) + ". Their digits above do not rank them.\n")
    else:
        text += "Every other experiment is worse than the champion beyond the noise.\n"
    return text


def _test_section(champion: str, test: dict | None) -> str:
    if test is None:
        return ""
    record = test["record"]
    names = ["accuracy", "balanced_accuracy", *[f"f1_{c}" for c in record["f1"]], "macro_f1", "roc_auc",
             "average_precision", *(["challenge_score"] if "challenge_score" in record else [])]
    lines = ["| figure | value |", "|---|---|"]
    for name in names:
        low, high = figure(record["ci"], name)
        lines.append(f"| {name} | {figure(record, name):.3f} [{low:.3f}–{high:.3f}] |")
    return (f"\n## Held-out test recordings: the champion, once\n\n`{champion}`, chosen on validation, scored on "
            f"the {record['n']:,} test recordings that no stage looked at before:\n\n" + "\n".join(lines) + "\n")


def run_report(params: Params, metrics_dir: Path, models_dir: Path, out_dir: Path, plots_dir: Path | None = None,
               chunks_dir: Path | None = None, spectrogram_dir: Path | None = None,
               records_dir: Path | None = None) -> pd.DataFrame:
    """Write ``results.csv``, ``results.md``, ``comparison.png`` and ``champion.json`` into
    ``out_dir``, and give the best experiment the champion alias in the Model Registry.

    With ``plots_dir``, ``results.md`` compares every experiment with the champion (paired
    bootstrap); with ``chunks_dir`` holding a test split, the champion is scored on it once, and
    the figures go to ``results.md``, ``champion.json`` and the champion's MLflow run.
    """
    from ecgpipe import plots, tracking  # matplotlib, mlflow: only when drawing and logging
    from ecgpipe.evaluation import metrics_for_dvc, mlflow_metrics
    from ecgpipe.experiment import RUN_FILE

    metric, bootstrap = params.report.champion_metric, params.evaluate.bootstrap()
    table = results_table(params, metrics_dir)
    if metric not in table:
        raise ParamsError(f"params: report.champion_metric: expected a column of results.csv such as record_f1_A, "
                          f"got {metric!r}")
    shifts = shift_table(params, metrics_dir)
    paired = None if plots_dir is None else paired_comparisons(table, metric, plots_dir, models_dir, bootstrap)
    champion = table.loc[table[metric].astype(float).idxmax(), "experiment"]
    test = None if chunks_dir is None else score_champion_on_test(params, champion, models_dir, chunks_dir,
                                                                  spectrogram_dir, records_dir)
    level = f"{bootstrap.confidence:.0%}"
    markdown = (
        "# Results on the validation recordings\n\n"
        "Made by the `report` stage from `metrics/<experiment>/eval.json`, `train.json` and `speed.json`.\n"
        "`notebook_balanced_chunk_acc` is the course notebook's figure (on its task only); `balanced_chunk_acc`\n"
        "ours on the same kind of set (validation chunks, each class oversampled to the largest's count).\n"
        f"`record_*` score whole recordings as they occur ({class_mix(params, metrics_dir)}), each recording's\n"
        "chunks (or crops) aggregated into one probability,\n"
        f"with a {level} interval in brackets (stratified bootstrap over the recordings, "
        f"{bootstrap.resamples:,} resamples).\n\n"
        + to_markdown(table.drop(columns=["model", "loader"] + [c for c in table if c.startswith(SHIFT_COLUMNS)]))
        + ("" if plots_dir is None else _comparison_section(paired, table, metric, bootstrap))
        + _test_section(champion, test)
        + _shift_section(shifts, table)
        + ("" if plots_dir is None else _robust_section(
            robust_against_plain(params, table, metric, plots_dir, models_dir, bootstrap), metric))
    )
    fig = plots.comparison(table, [m for m in COMPARED if m in table], f"validation: chunks (balanced) and "
                           f"recordings, {level} intervals on recordings")
    champion_info = register_champion(table, metric, models_dir, params.report.registered_model)
    if test is not None:
        champion_info["test"] = metrics_for_dvc(test)
        with tracking.resumed_run(read_json(Path(models_dir) / champion / RUN_FILE)):
            import mlflow

            mlflow.log_metrics(mlflow_metrics({"test": test}))
    with staged_outputs() as staged:
        table.to_csv(staged.file(Path(out_dir) / "results.csv"), index=False, float_format="%.4f")
        staged.file(Path(out_dir) / "results.md").write_text(markdown)
        fig.savefig(staged.file(Path(out_dir) / "comparison.png"), dpi=110, format="png")
        if paired is not None:
            paired.to_csv(staged.file(Path(out_dir) / "comparison.csv"), index=False, float_format="%.4f")
        staged.file(Path(out_dir) / "champion.json").write_text(json_text(champion_info))
        if shifts is not None:
            shifts.to_csv(staged.file(Path(out_dir) / "shifts.csv"), index=False, float_format="%.4f")
    return table
