"""The `report` stage: every experiment's figures in one table, beside the notebook's own."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ecgpipe.core.errors import ParamsError
from ecgpipe.core.io import json_text, read_json, staged_outputs
from ecgpipe.core.results import (
    CHUNK_COLUMNS,
    COMPARED,
    DEFAULT_CHAMPION_METRIC,
    NOTEBOOK_COLUMN,
    RECORD,
    RECORD_PREFIX,
    SHIFT_COLUMNS,
    UNSEEN,
    WORST_SHIFT,
    calibration_columns,
    figure_columns,
    interval_columns,
    is_record_column,
    joined,
    record_figure,
    shifts_key,
    unseen_columns,
    worst_shift_columns,
    worst_shift_key,
)
from ecgpipe.data.store import CALIBRATION
from ecgpipe.inference.checkpoint import SPEC_FILE
from ecgpipe.evaluation.metrics import Bootstrap, positive_class
from ecgpipe.params import EnsembleParams, ExperimentParams, Params, ReportParams, SpectrogramParams, ensemble_name
from ecgpipe.pipeline.evaluate import scoring_settings
from ecgpipe.reporting.champion import Decision, choose_champion
from ecgpipe.reporting.tables import (
    af_alarm_columns,
    af_alarm_section,
    champion_section,
    comparison_section,
    held_out_test_section,
    paired_comparisons,
    paired_validation_difference,
    robust_section,
    unseen_columns_of,
    unseen_section,
    shift_section,
    to_markdown,
)
from ecgpipe.tracking.registry import current_version, register_choice, registry_alias

# The notebook's balanced validation chunk accuracy (its only figure), by (model, loader).
NOTEBOOK_BALANCED_CHUNK_ACC = {
    ("mean_spectrum", "chunked"): 0.572, ("mean_spectrum", "random_chunk"): 0.567,
    ("fully_connected", "chunked"): 0.776, ("fully_connected", "random_chunk"): 0.800,
    ("conv", "chunked"): 0.860, ("conv", "random_chunk"): 0.872,
    ("rnn", "chunked"): 0.499,
    ("lstm", "chunked"): 0.900,
    ("torch_lstm", "chunked"): 0.905, ("torch_lstm", "random_chunk"): 0.930,
}


def notebook_figure(spectrogram: SpectrogramParams, model: str, loader: str) -> float | None:
    """The notebook's figure for this model and loader, where the task is the notebook's (N and A,
    recordings of at least 4,000 samples); None otherwise, where it compares with nothing."""
    notebook_task = spectrogram.classes == ["N", "A"] and spectrogram.min_length == 4000
    return NOTEBOOK_BALANCED_CHUNK_ACC.get((model, loader)) if notebook_task else None


def class_mix(experiments: dict[str, ExperimentParams], metrics_dir: Path, split: str = "val") -> str:
    """The recordings' class mix on ``split``, e.g. ``N 87%, A 13%``, from the first experiment's scores."""
    name = next(iter(experiments))
    support = read_json(Path(metrics_dir) / name / "eval.json")[split][RECORD]["support"]
    total = sum(support.values())
    return ", ".join(f"{c} {n / total:.0%}" for c, n in support.items())


def figure_row(name: str, settings: dict, metrics_dir: Path, split: str = "val", speed: int | None = None) -> dict:
    """results.csv's row of experiment NAME (of any kind): ``settings``, then the figures of its
    eval.json, its training speed (examples/s; None: it has none), the figures' intervals and, where
    measured, its false alarms on labels the task never trained on, its calibration and its worst
    device shift."""
    eval_json = read_json(Path(metrics_dir) / name / "eval.json")
    evaluation = eval_json[split]
    record = evaluation[RECORD]
    row = {"experiment": name, **settings, **figure_columns(evaluation), "train_examples_per_s": speed}
    if "ci" in record:  # each record_* figure's interval, as <column>_ci_low / _ci_high
        row.update(interval_columns(record, list(row)))
    if UNSEEN in eval_json:  # AF's false alarms on the labels the task never trained on
        row.update(unseen_columns(eval_json[UNSEEN]))
    if CALIBRATION in eval_json:  # fitted on recordings held out of training: temperature, threshold, ECE
        row.update(calibration_columns(eval_json[CALIBRATION], positive_class(list(record["f1"]))))
    worst = eval_json.get(worst_shift_key(split))
    if worst is not None:  # robustness beside the clean figures; the champion is chosen on the clean ones
        row.update(worst_shift_columns(worst, positive_class(list(record["f1"]))))
    return row


def experiment_row(name: str, experiment: ExperimentParams, spectrogram: SpectrogramParams, metrics_dir: Path,
                   split: str = "val") -> dict:
    return figure_row(name, {
        "model": experiment.model,
        "loader": experiment.loader,
        "epochs": experiment.epochs,
        "robust": int(experiment.robust),  # trained with robustness options: a figure the gate may use
        NOTEBOOK_COLUMN: notebook_figure(spectrogram, experiment.model, experiment.loader),
    }, metrics_dir, split, read_json(Path(metrics_dir) / name / "speed.json")["examples_per_s"])  # median epoch's


def ensemble_row(network: str, experiments: dict[str, ExperimentParams], metrics_dir: Path, split: str = "val") -> dict:
    """results.csv's row of ``network``'s rhythm ensemble: its network's loader and robustness (what the
    gate may read), no epochs or training speed of its own."""
    return figure_row(ensemble_name(network), {"model": ENSEMBLE_MODEL, "loader": experiments[network].loader,
                                               "epochs": None, "robust": int(experiments[network].robust),
                                               NOTEBOOK_COLUMN: None}, metrics_dir, split)


ENSEMBLE_MODEL = "rhythm_ensemble"  # results.csv's model column of an ensemble


def shift_table(experiments: list[str], metrics_dir: Path, split: str = "val") -> pd.DataFrame | None:
    """One row per experiment and shift: F1 of the positive class and its paired change from the
    unshifted figure, ROC AUC, sensitivity and specificity, each with its interval."""
    rows = []
    for name in experiments:
        shifts = read_json(Path(metrics_dir) / name / "eval.json").get(shifts_key(split), {})
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


def results_table(experiments: dict[str, ExperimentParams], spectrogram: SpectrogramParams, metrics_dir: Path,
                  split: str = "val", ensembles: dict[str, EnsembleParams] | None = None) -> pd.DataFrame:
    """One row per experiment, then one per rhythm ensemble (``ensembles``, by network)."""
    table = pd.DataFrame([experiment_row(name, experiment, spectrogram, metrics_dir, split)
                          for name, experiment in experiments.items()]
                         + [ensemble_row(network, experiments, metrics_dir, split) for network in ensembles or {}])
    # counts stay integers where an ensemble has none (epochs, examples/s): empty, not a float column
    return table.astype({c: "Int64" for c in ("epochs", "train_examples_per_s") if table[c].isna().any()})


def choose(report: ReportParams, table: pd.DataFrame, plots_dir: Path | None, bootstrap: Bootstrap) -> Decision:
    """The champion by ``report.gate``, ``prefer`` and ``order``; candidates within noise of the best
    by the paired bootstrap over the validation recordings (with ``plots_dir``, for record figures)."""
    metric = report.champion_metric
    paired = None
    if plots_dir is not None and is_record_column(metric):
        cache: dict[tuple[str, str], tuple[float, float, float]] = {}

        def paired(a: str, b: str) -> tuple[float, float, float]:
            if (a, b) not in cache:
                diff = paired_validation_difference(a, b, record_figure(metric), plots_dir, bootstrap)
                cache[a, b] = (diff.difference, diff.low, diff.high)
            return cache[a, b]
    return choose_champion(table, metric, report.gate, report.prefer, report.order, paired)


def robust_against_plain(experiments: dict[str, ExperimentParams], classes: list[str], table: pd.DataFrame,
                         metric: str, plots_dir: Path, bootstrap: Bootstrap) -> pd.DataFrame | None:
    """Each experiment with robustness options against each plain experiment of the same network:
    the paired difference of ``metric`` on the unshifted recordings (what robustness costs or buys
    on clean data) and both worst-shift figures (what it buys under shift)."""
    if not is_record_column(metric) or WORST_SHIFT not in table:
        return None
    by_name = table.set_index("experiment")
    worst = joined(WORST_SHIFT, "f1", positive_class(classes))
    rows = []
    for robust in [n for n, e in experiments.items() if e.robust]:
        model = experiments[robust].model
        for plain in [n for n, e in experiments.items() if e.model == model and not e.robust]:
            diff = paired_validation_difference(robust, plain, record_figure(metric), plots_dir, bootstrap)
            rows.append({"robust": robust, "plain": plain, f"{metric}_robust": by_name.loc[robust, metric],
                         f"{metric}_plain": by_name.loc[plain, metric], "difference": diff.difference,
                         "difference_ci_low": diff.low, "difference_ci_high": diff.high,
                         f"{worst}_robust": by_name.loc[robust, worst], f"{worst}_plain": by_name.loc[plain, worst]})
    return pd.DataFrame(rows) if rows else None


def score_champion_on_test(scoring: dict, champion: str, models_dir: Path, chunks_dir: Path,
                           spectrogram_dir: Path, records_dir: Path) -> dict | None:
    """The champion's figures on the held-out test recordings (those of ``chunks/test.pt``), with
    intervals; None without a test split. Only the champion is scored there, once, after it was
    chosen on validation, so that the test figures are not a second round of selection."""
    from ecgpipe.evaluation.saved_model import score_saved_model

    if not (Path(chunks_dir) / "test.pt").is_file():
        return None
    if not (Path(models_dir) / champion / SPEC_FILE).is_file():  # an ensemble: its evaluation has no test split
        raise ParamsError(f"params: split.test: the champion {champion} is an ensemble, which is not scored on a test "
                          "split yet; expected split.test 0 where a task makes ensembles (task_ensembles)")
    _, _, scores = score_saved_model(Path(models_dir) / champion, "test", records_dir, spectrogram_dir, chunks_dir,
                                     **scoring)
    return scores


def report_sections(params: Params) -> dict:
    """What the report reads of params.yaml, as ``run_report``'s keywords: ``report``, ``experiments``,
    ``spectrogram`` (the task's classes), scoring as the evaluate stage scores (``evaluate``, and
    ``train``/``chunk``'s device, batch size and seed), and ``study.name``'s registry alias."""
    return {"report": params.report, "experiments": params.experiments, "ensembles": params.ensembles,
            "spectrogram": params.spectrogram,
            "scoring": scoring_settings(params.evaluate, params.train, params.chunk),
            "alias": registry_alias(params.study.name)}


def run_report(report: ReportParams, experiments: dict[str, ExperimentParams], spectrogram: SpectrogramParams,
               scoring: dict, alias: str, metrics_dir: Path, models_dir: Path, out_dir: Path,
               plots_dir: Path | None = None,
               chunks_dir: Path | None = None, spectrogram_dir: Path | None = None,
               records_dir: Path | None = None, ensembles: dict[str, EnsembleParams] | None = None) -> pd.DataFrame:
    """Write ``results.csv``, ``results.md``, ``comparison.png`` and ``champion.json`` into
    ``out_dir``, and register the champion chosen by ``report.gate``/``prefer``/``order`` in the
    MLflow Model Registry: as ``@champion`` from the workspace's ``dvc repro``, as
    ``@candidate-<name>`` from a DVC experiment or study (``tracking.registry.registry_alias``).
    No experiment passes the gate: nothing is registered, and the report says why.

    With ``plots_dir``, ``results.md`` compares every experiment with the champion (paired
    bootstrap); with ``chunks_dir`` holding a test split, the champion is scored on it once, and
    the figures go to ``results.md``, ``champion.json`` and the champion's MLflow run.
    """
    from ecgpipe.evaluation.scoring import metrics_for_dvc, mlflow_metrics
    from ecgpipe.reporting import plots  # matplotlib: only when drawing
    from ecgpipe.tracking import runs as tracking  # mlflow: only when logging
    from ecgpipe.tracking.runs import RUN_FILE

    metric, bootstrap = report.champion_metric, scoring["bootstrap"]
    table = results_table(experiments, spectrogram, metrics_dir, ensembles=ensembles)
    if metric not in table:
        raise ParamsError(f"params: report.champion_metric: expected a column of results.csv such as "
                          f"{DEFAULT_CHAMPION_METRIC}, got {metric!r}")
    shifts = shift_table(list(table["experiment"]), metrics_dir)
    decision = choose(report, table, plots_dir, bootstrap)
    champion = decision.champion
    reference = champion or table.loc[table[metric].astype(float).idxmax(), "experiment"]
    paired = None if plots_dir is None else paired_comparisons(table, metric, reference, plots_dir, bootstrap,
                                                               is_champion=champion is not None)
    test = None if chunks_dir is None or champion is None else score_champion_on_test(
        scoring, champion, models_dir, chunks_dir, spectrogram_dir, records_dir)
    level = f"{bootstrap.confidence:.0%}"
    markdown = (
        "# Results on the validation recordings\n\n"
        "Made by the `report` stage from `metrics/<experiment>/eval.json`, `train.json` and `speed.json`.\n"
        f"`{NOTEBOOK_COLUMN}` is the course notebook's figure (on its task only); `{CHUNK_COLUMNS['chunk_balanced']}`\n"
        "ours on the same kind of set (validation chunks, each class oversampled to the largest's count).\n"
        f"`{RECORD_PREFIX}*` score whole recordings as they occur ({class_mix(experiments, metrics_dir)}), each recording's\n"
        "chunks (or crops) aggregated into one probability,\n"
        f"with a {level} interval in brackets (stratified bootstrap over the recordings, "
        f"{bootstrap.resamples:,} resamples).\n\n"
        + to_markdown(table.drop(columns=["model", "loader"] + [c for c in table if c.startswith(SHIFT_COLUMNS)]
                                 + af_alarm_columns(table) + unseen_columns_of(table)))
        + af_alarm_section(table)
        + unseen_section(table)
        + champion_section(decision, metric, report.gate, report.prefer, report.order, alias)
        + ("" if plots_dir is None else comparison_section(paired, table, metric, bootstrap))
        + ("" if champion is None else held_out_test_section(champion, test))
        + shift_section(shifts, table)
        + ("" if plots_dir is None else robust_section(
            robust_against_plain(experiments, spectrogram.classes, table, metric, plots_dir, bootstrap), metric))
    )
    fig = plots.comparison(table, [m for m in COMPARED if m in table], f"validation: chunks (balanced) and "
                           f"recordings, {level} intervals on recordings")
    if champion is None:
        run = read_json(Path(models_dir) / reference / RUN_FILE)
        champion_info = {"experiment": None, "how": decision.how,
                         "registered": current_version(run["tracking_uri"], report.registered_model, alias)}
    else:
        value = float(table.set_index("experiment").loc[champion, metric])
        champion_info = {**register_choice(champion, models_dir, report.registered_model, alias,
                                           f"{metric} {value:.4f}; {decision.how}"),
                         metric: value, "how": decision.how}
    if test is not None:
        champion_info["test"] = metrics_for_dvc(test)
        with tracking.resumed_run(read_json(Path(models_dir) / champion / RUN_FILE)):
            import mlflow

            mlflow.log_metrics(mlflow_metrics({"test": test}))
    with staged_outputs() as staged:
        table.to_csv(staged.file(Path(out_dir) / "results.csv"), index=False, float_format="%.4f")
        staged.file(Path(out_dir) / "results.md").write_text(markdown)
        fig.savefig(staged.file(Path(out_dir) / "comparison.png"), dpi=110, format="png")
        plots.close(fig)
        if paired is not None:
            paired.to_csv(staged.file(Path(out_dir) / "comparison.csv"), index=False, float_format="%.4f")
        staged.file(Path(out_dir) / "champion.json").write_text(json_text(champion_info))
        if shifts is not None:
            shifts.to_csv(staged.file(Path(out_dir) / "shifts.csv"), index=False, float_format="%.4f")
    return table
