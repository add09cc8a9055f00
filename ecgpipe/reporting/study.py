"""A study's report: its runs collected from MLflow, figures per experiment across folds and seeds
with t-intervals, paired differences, the declared gate fold by fold, and the spread figure."""
from __future__ import annotations

import functools
import itertools
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from ecgpipe.core.errors import StudyError
from ecgpipe.core.results import (
    AF,
    OPTIONAL_STUDY_FIGURE,
    SEED_FIGURES,
    STUDY_FIGURES,
    STUDY_PAIRED,
    STUDY_SERVED_FIGURES,
    STUDY_TASK_FIGURES,
    STUDY_TASK_PAIRED,
    VAL,
    interval,
    is_record_column,
    joined,
    mlflow_names,
    study_metric,
    worst_shift_columns,
    worst_shift_key,
)
from ecgpipe.tracking.runs import FOLD_TAG, SEED_TAG, STUDY_TAG, record_predictions_artifact

PARENT_TAG = "study_parent"
SETTINGS_TAG = "study_set"  # on the parent run: the `study run --set` values its runs were queued with (JSON list)
# where and by what each run was made (tags of the train stage's run): the report says so, and says
# when a study's runs came from more than one commit or machine
PROVENANCE_TAGS = {"commit": "mlflow.source.git.commit", "cpu": "cpu", "device": "device", "torch": "torch_version"}
RECORD_PREDICTIONS = record_predictions_artifact(VAL)  # each run's table of its validation recordings
SEEDS_MEAN = "mean of seeds"
THRESHOLD = joined("threshold", AF)  # the served operating point's threshold on P(A), where a task fits one


@dataclass
class StudyRuns:
    """One row per (experiment, fold, seed): the MLflow run and its recording-level figures."""

    name: str
    runs: pd.DataFrame
    figures: tuple[str, ...] = STUDY_FIGURES

    @property
    def paired(self) -> tuple[str, ...]:
        return tuple(f for f in (*STUDY_TASK_PAIRED, *STUDY_PAIRED) if f in self.figures)

    @property
    def ranking(self) -> str:
        """The figure that orders the experiments: the challenge score where there is one."""
        return self.paired[0]


def gate_columns(metrics: dict[str, float], columns) -> dict[str, float]:
    """A study run's figures under results.csv's names, as a gate reads them: its validation figures
    (MLflow's ``val_`` names), its worst device shift's (named by ``worst_shift_columns``, as the report
    stage names them) and the served threshold. A column the run did not log is NaN."""
    prefix = worst_shift_key(VAL) + "_"
    worst = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}
    try:
        shifted = worst_shift_columns({"shift": "", **worst}, AF)
    except KeyError:  # a run without the worst shift's figures (or some of them): its shift columns are missing
        shifted = {}
    by_name = {THRESHOLD: metrics.get(THRESHOLD, np.nan), **shifted}
    return {c: by_name[c] if c in by_name else metrics.get(*mlflow_names({study_metric(c): np.nan}).popitem())
            for c in columns}


def collect_runs(name: str, tracking_uri: str, experiment_name: str, gate: tuple[str, ...] = ()) -> StudyRuns:
    """The study's finished training runs from MLflow, the newest per (experiment, fold, seed), with
    the served threshold and ``gate``'s columns where they were logged."""
    from mlflow.tracking import MlflowClient

    from ecgpipe.tracking.runs import check_store_file

    check_study_name(name)
    check_store_file(tracking_uri, write=False)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise StudyError(f"no MLflow experiment {experiment_name!r} in {tracking_uri}")
    found = client.search_runs([experiment.experiment_id], filter_string=f"tags.{STUDY_TAG} = '{name}'",
                               order_by=["attributes.start_time DESC"], max_results=10000)
    rows = []
    for run in found:
        tags = run.data.tags
        if tags.get(PARENT_TAG) or run.info.status != "FINISHED" or FOLD_TAG not in tags:
            continue
        metrics = run.data.metrics
        rows.append({"experiment": run.info.run_name, "study": name, "fold": int(tags[FOLD_TAG]), "seed": int(tags[SEED_TAG]),
                     "run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri,
                     **{column: tags.get(tag, "") for column, tag in PROVENANCE_TAGS.items()},
                     "split_folds": run.data.params.get("split.folds", ""),
                     **{f: metrics.get(study_metric(f), np.nan) for f in STUDY_FIGURES + STUDY_TASK_FIGURES},
                     **gate_columns(metrics, (THRESHOLD, *gate))})
    if not rows:
        raise StudyError(f"no finished MLflow run is tagged {STUDY_TAG}={name!r} in {tracking_uri}")
    figures = STUDY_FIGURES + tuple(f for f in STUDY_TASK_FIGURES if any(not np.isnan(r[f]) for r in rows))
    _check_figures(rows, figures)
    # the gate's device-shift checks (AF found's change under the worst shift, the lowest AF ROC AUC)
    # are figures of the table too, where every run has them: a lever's study pairs them with today's
    figures += tuple(c for c in gate if not is_record_column(c) and all(not np.isnan(r[c]) for r in rows))
    runs = pd.DataFrame(rows).drop_duplicates(["experiment", "fold", "seed"])  # newest first: keep it
    return StudyRuns(name, runs.sort_values(["experiment", "seed", "fold"]).reset_index(drop=True), figures)


def _check_figures(rows: list[dict], figures: tuple[str, ...]) -> None:
    """A figure missing from some runs would average as NaN (a renamed metric once gave an all-NaN
    report): name the first such run. Only ``OPTIONAL_STUDY_FIGURE`` may be missing from all of them (a
    study without device shifts)."""
    for f in figures:
        missing = [r for r in rows if np.isnan(r[f])]
        if missing and (len(missing) < len(rows) or f != OPTIONAL_STUDY_FIGURE):
            r = missing[0]
            raise StudyError(f"{r['experiment']} (fold {r['fold']}, seed {r['seed']}): no metric {study_metric(f)} in its MLflow "
                             f"run {r['run_id']}; expected every study figure (evaluated by another version of ecgpipe?)")


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, standard deviation and the t-interval of the mean of ``values`` (one per fold)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(values.std(ddof=1))
    half = float(scipy.stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * sd / np.sqrt(len(values))
    return mean, sd, mean - half, mean + half


def summarise(study: StudyRuns, confidence: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per experiment: folds, and each figure's mean, sd and interval across folds (seeds averaged
    within a fold first). Per pair of experiments: each figure's mean paired difference across
    the folds both have, its interval, and whether the interval excludes 0."""
    per_fold = study.runs.groupby(["experiment", "fold"])[list(study.figures)].mean()
    summary_rows = []
    for experiment, frame in per_fold.groupby(level="experiment"):
        row = {"experiment": experiment, "folds": len(frame)}
        for f in study.figures:
            low, high = interval(f)
            row[f"{f}_mean"], row[f"{f}_sd"], row[low], row[high] = t_interval(frame[f], confidence)
        summary_rows.append(row)
    summary = pd.DataFrame(summary_rows).sort_values(f"{study.ranking}_mean", ascending=False).reset_index(drop=True)
    pair_rows = []
    for a, b in itertools.combinations(summary["experiment"], 2):
        both = per_fold.loc[a].join(per_fold.loc[b], suffixes=("_a", "_b"), how="inner")
        row = {"a": a, "b": b, "folds": len(both)}
        for f in study.figures:
            mean, _, low, high = t_interval(both[f"{f}_a"] - both[f"{f}_b"], confidence)
            row[f"{f}_difference"], row[interval(f)[0]], row[interval(f)[1]] = mean, low, high
            row[f"{f}_real"] = bool(low > 0 or high < 0)
        pair_rows.append(row)
    return summary, pd.DataFrame(pair_rows)


def study_markdown(name: str, summary: pd.DataFrame, pairs: pd.DataFrame, confidence: float = 0.95,
                   figures: tuple[str, ...] = STUDY_FIGURES, paired: tuple[str, ...] = STUDY_PAIRED) -> str:
    level = f"{confidence:.0%}"

    def spread(row, f):
        low, high = interval(f)
        return f"{row[f + '_mean']:.3f} ± {row[f + '_sd']:.3f} [{row[low]:.3f}–{row[high]:.3f}]"

    lines = [f"# Study `{name}`: cross-validation on the validation folds", "",
             f"Each figure is the mean ± standard deviation across folds (a fold's seeds averaged first), with the "
             f"{level} t-interval of the mean in brackets (recording level, each fold's validation recordings)."
             + (" `record_recall_A` and `record_af_specificity_<label>` are at each fold's served operating point "
                "(fitted on its training recordings held out of training); `..._at_sensitivity_95_<label>` at the "
                "threshold that finds 95% of the fold's AF recordings." if set(STUDY_SERVED_FIGURES) <= set(figures) else ""), "",
             "| experiment | folds | " + " | ".join(figures) + " |", "|---|---|" + "---|" * len(figures)]
    for _, row in summary.iterrows():
        lines.append(f"| {row['experiment']} | {row['folds']} | " + " | ".join(spread(row, f) for f in figures) + " |")
    if pairs.empty:  # one experiment: nothing to pair
        return "\n".join(lines) + "\n"
    lines += ["", f"## Paired differences across folds (a − b, {level} t-interval)", "",
              "Each fold scores both experiments on the same recordings; a difference is real when its interval "
              "excludes 0. Every figure of the table above, pair by pair.", "",
              "| a | b | folds | figure | a − b | verdict |", "|---|---|---|---|---|---|"]
    for _, row in pairs.iterrows():
        for f in (*paired, *(f for f in figures if f not in paired)):
            low, high = interval(f)
            verdict = "real" if row[f"{f}_real"] else "within noise"
            lines.append(f"| {row['a']} | {row['b']} | {row['folds']} | {f} | "
                         f"{row[f + '_difference']:+.3f} [{row[low]:+.3f}, {row[high]:+.3f}] | {verdict} |")
    return "\n".join(lines) + "\n"


def gate_table(study: StudyRuns, gate: dict) -> pd.DataFrame:
    """Every run judged by ``gate`` (params' ``report.gate``: results.csv column -> check) on its own
    fold, as the report stage judges an experiment on its one split: one row per (experiment, fold,
    seed) with the served threshold, the gate's columns, whether it passes and why not."""
    from ecgpipe.reporting.champion import gate_failures

    rows = []
    for _, run in study.runs.iterrows():
        failures = gate_failures(run, gate)
        rows.append({"experiment": run["experiment"], "fold": run["fold"], "seed": run["seed"],
                     THRESHOLD: run[THRESHOLD], **{c: run[c] for c in gate}, "passes": not failures,
                     "failures": "; ".join(failures)})
    return pd.DataFrame(rows)


def gate_markdown(table: pd.DataFrame, gate: dict, confidence: float = 0.95) -> str:
    """The gate fold by fold: each run's figures (a failed check marked ✗), then per experiment the
    mean across folds with its t-interval and how many folds pass."""
    from ecgpipe.reporting.champion import gate_failures

    def bound(check) -> str:
        return f"≥ {check.at_least:g}" if check.at_least is not None else f"≤ {check.at_most:g}"

    columns = [THRESHOLD, *gate]
    lines = ["## The gate, fold by fold", "",
             "Each fold's run judged by the declared gate (`report.gate`), as the report stage judges an experiment "
             f"on its one split; `{THRESHOLD}` is the fold's served threshold on P(A), fitted on its training "
             f"recordings held out of training. The mean rows give the mean across folds [{confidence:.0%} t-interval].", "",
             "| experiment | fold | " + " | ".join(f"{c} ({bound(gate[c])})" if c in gate else c for c in columns)
             + " | verdict |", "|---|---|" + "---|" * (len(columns) + 1)]
    for experiment, runs in table.groupby("experiment", sort=False):
        for _, run in runs.iterrows():
            failed = {c for c, check in gate.items() if gate_failures(run, {c: check})}
            cells = [f"{run[c]:.3f}" + (" ✗" if c in failed else "") for c in columns]
            verdict = "passes" if run["passes"] else "fails"
            lines.append(f"| {experiment} | {run['fold']} | " + " | ".join(cells) + f" | {verdict} |")
        per_fold = runs.groupby("fold")[columns].mean()
        means = [t_interval(per_fold[c].dropna(), confidence) if per_fold[c].notna().any() else (np.nan,) * 4
                 for c in columns]
        passed = runs.groupby("fold")["passes"].all()
        lines.append(f"| {experiment} | mean | " + " | ".join(f"{m:.3f} [{low:.3f}–{high:.3f}]" for m, _, low, high in means)
                     + f" | passes on {int(passed.sum())} of {len(passed)} folds |")
    return "\n".join(lines) + "\n"


def provenance_markdown(study: StudyRuns, out_dir: Path, task: str | None = None, af_threshold: float | None = None,
                        settings: dict[str, list[str]] | None = None, against: str | None = None) -> str:
    """Where the study's runs come from, and the commands that made them (with each study's
    ``settings``, its `study run --set` values) and this report."""
    runs, settings = study.runs, settings or {}

    def counted(column: pd.Series, unknown: str) -> str:
        recorded, missing = column[column != ""].value_counts(), int((column == "").sum())
        if len(recorded) == 1 and not missing:
            return f"{recorded.index[0]} (every run)"
        listed = "; ".join([f"{value} ({n} runs)" for value, n in recorded.items()]
                           + ([f"{unknown} ({missing} runs)"] if missing else []))
        # only two recorded values say the folds differ; a run that recorded none says nothing either way
        return f"{len(recorded)} different ones, so the folds were not all made alike: {listed}" if len(recorded) > 1 else listed

    of_task = "" if task is None else f" --task {task}"
    counts, commands = [], []
    for name, own in runs.groupby("study", sort=False):
        experiments = sorted(own["experiment"].str.removeprefix(f"{name}/").unique())
        seeds = " ".join(map(str, sorted(own["seed"].unique())))
        folds = ", ".join(sorted(set(own["split_folds"]) - {""})) or "?"
        changed = "".join(f" --set {shlex.quote(value)}" for value in settings.get(name, []))
        counts.append(f"- Runs: {len(own)} (MLflow tag `{STUDY_TAG}={name}`): {len(experiments)} experiments, "
                      f"folds {', '.join(map(str, sorted(own['fold'].unique())))}, seeds {seeds}.")
        commands.append(f"`ecgpipe study run --name {name}{of_task} --folds {folds} --seeds {seeds}{changed} "
                        f"--experiments {' '.join(experiments)}`")
    return "\n".join(["## Provenance", "", *counts,
        f"- Code: commit {counted(runs['commit'].str[:12], 'not recorded')} (MLflow's `mlflow.source.git.commit`: "
        "the commit each queued experiment ran from).",
        f"- Machine: {counted(runs['cpu'], 'not recorded by the run')}; "
        f"device {counted(runs['device'], 'not recorded')}; torch {counted(runs['torch'], 'not recorded')}.",
        f"- Made by {' and '.join(commands)}; this report by `ecgpipe study report --name {study.name}{of_task} --out {out_dir}"
        + ("" if against is None else f" --against {against}")
        + ("" if af_threshold is None else f" --af-threshold {af_threshold:g}") + "`.",
        ""])


def against_runs(study: StudyRuns, other: StudyRuns) -> StudyRuns:
    """Two studies' runs as one, each experiment named STUDY/EXPERIMENT, so that every figure is paired
    across them fold by fold: a candidate recipe's study (`study run --set`) against today's. Their
    folds must be the same recordings: the same number of folds (a fold's recordings follow from
    split.folds and the split's seed, which the study's runs share with params.yaml)."""
    folds = {s.name: set(s.runs["split_folds"]) - {""} for s in (study, other)}
    if len(folds[study.name] | folds[other.name]) > 1:  # runs that logged no split.folds cannot say
        raise StudyError(f"study {study.name} has split.folds {sorted(folds[study.name])} and {other.name} "
                         f"{sorted(folds[other.name])}; expected the same folds, so that each pairs the same recordings")
    figures = tuple(f for f in study.figures if f in other.figures)
    runs = pd.concat([s.runs.assign(experiment=s.name + "/" + s.runs["experiment"]) for s in (study, other)],
                     ignore_index=True)
    return StudyRuns(study.name, runs, figures)


def pooled_seeds(study: StudyRuns, other: StudyRuns, settings: dict[str, list[str]]) -> StudyRuns | None:
    """``study`` and ``other`` (its `--against`) as one study's seeds, when they are one recipe trained
    with other seeds: the same `study run --set` values (``settings``, by study), one commit and one
    machine among their runs, and no seed in both. Then the seeds section scores each seed and the mean
    of their probabilities on each fold's recordings (a second seed as a lever); otherwise None."""
    runs = pd.concat([study.runs, other.runs], ignore_index=True)
    if sorted(settings.get(study.name, [])) != sorted(settings.get(other.name, [])):
        return None
    if any(len(set(runs[column]) - {""}) > 1 for column in ("commit", "cpu")):
        return None  # no study merges runs made by different code or machines
    if set(study.runs["seed"]) & set(other.runs["seed"]):
        return None
    return StudyRuns(study.name, runs, tuple(f for f in study.figures if f in other.figures))


def study_parent(client, experiment_id: str, name: str):
    """Study ``name``'s own MLflow run (queued studies get it from `study run`, others from their first
    report), or None."""
    parents = client.search_runs([experiment_id], f"tags.{STUDY_TAG} = '{name}' and tags.{PARENT_TAG} = 'true'")
    return parents[0] if parents else None


def new_study_parent(client, experiment_id: str, name: str, overrides: tuple[str, ...] = ()):
    """Study ``name``'s own MLflow run, made by `study run` when it queues the study (with its ``--set``
    values) or by the first report of a study queued before there were parent runs."""
    import json

    parent = client.create_run(experiment_id, run_name=f"study-{name}",
                               tags={STUDY_TAG: name, PARENT_TAG: "true", SETTINGS_TAG: json.dumps(list(overrides))})
    client.set_terminated(parent.info.run_id)
    return parent


def parent_settings(parent) -> list[str]:
    """The `study run --set` values recorded on a study's parent run (none: no parent, or no --set)."""
    import json

    return json.loads(parent.data.tags.get(SETTINGS_TAG, "[]")) if parent is not None else []


def record_predictions(client, run_id: str) -> pd.DataFrame:
    """A run's validation recordings as its evaluate stage logged them (``RECORD_PREDICTIONS``); a
    report reads each run's table once, however many of its sections use it."""
    return _logged_predictions(client.tracking_uri, run_id).copy()


@functools.lru_cache(maxsize=256)  # a finished run's artifact never changes; a few MB at most
def _logged_predictions(tracking_uri: str, run_id: str) -> pd.DataFrame:
    import json
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, RECORD_PREDICTIONS, tmp)
        except Exception as exc:  # MLflow raises several kinds for a missing artifact
            raise StudyError(f"MLflow run {run_id}: no {RECORD_PREDICTIONS} ({exc}); expected the evaluate "
                             "stage's table of its validation recordings") from None
        table = json.loads(Path(path).read_text())
    return pd.DataFrame(table["data"], columns=table["columns"])


def seed_figures(actual: pd.Series, probs: np.ndarray, class_names: list[str], names: tuple[str, ...] = SEED_FIGURES,
                 labels: np.ndarray | None = None) -> dict[str, float]:
    """``names`` (results.csv's, ``~`` or ``noise``) of recordings scored ``probs`` (a column per class),
    labelled ``labels`` (class indices; None: the most likely class), through the evaluate stage's
    ``score``; those a task lacks (no challenge score with two classes) are left out."""
    from ecgpipe.core.results import figure, record_figure
    from ecgpipe.evaluation.metrics import score

    y = np.array([class_names.index(a) for a in actual])
    points = score(y, probs, class_names, labels=labels)
    out = {}
    for name in names:
        try:
            value = figure(points, record_figure(name).replace("noise", "~"))
        except KeyError:
            continue
        if value is not None:
            out[name] = float(value)
    return out


def seed_means(study: StudyRuns, tracking_uri: str) -> pd.DataFrame:
    """Every fold, scored from its runs' validation tables at the most likely class: by each seed
    alone and, where a fold has several seeds, by the mean of their probabilities, on the same
    recordings. One row per (experiment, fold, candidate), the candidate ``seed S`` or ``SEEDS_MEAN``.
    Empty for a study whose runs logged no table (made before the evaluate stage logged one) and
    has a single seed per fold; with several seeds, such a run is an error."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    several = study.runs.groupby(["experiment", "fold"]).size().max() > 1

    def logged(run_id: str) -> bool:
        return RECORD_PREDICTIONS in {a.path for a in client.list_artifacts(run_id, Path(RECORD_PREDICTIONS).parent.as_posix())}

    if not several and not all(map(logged, study.runs["run_id"])):
        return pd.DataFrame()
    rows = []
    for (experiment, fold), runs in study.runs.groupby(["experiment", "fold"]):
        tables = [record_predictions(client, run_id).set_index("record") for run_id in runs["run_id"]]
        first = tables[0]
        class_names = [c.removeprefix("p_") for c in first.columns if c.startswith("p_")]
        probs = []
        for seed, table in zip(runs["seed"], tables):
            if sorted(table.index) != sorted(first.index):
                raise StudyError(f"{experiment} fold {fold}: seed {seed}'s validation recordings differ from seed "
                                 f"{runs['seed'].iloc[0]}'s; expected the same fold")
            probs.append(table.loc[first.index, [f"p_{c}" for c in class_names]].to_numpy(dtype=np.float64))
            rows.append({"experiment": experiment, "fold": fold, "candidate": f"seed {seed}",
                         **seed_figures(first["actual"], probs[-1], class_names)})
        if len(probs) > 1:
            rows.append({"experiment": experiment, "fold": fold, "candidate": SEEDS_MEAN,
                         **seed_figures(first["actual"], np.mean(probs, axis=0), class_names)})
    return pd.DataFrame(rows)


def seeds_markdown(means: pd.DataFrame, confidence: float = 0.95, pooled: str = "") -> str:
    """The seeds' table: each candidate across folds, and the mean of seeds against each seed alone,
    paired by fold (``pooled``: a sentence saying whose seeds they are, when two studies')."""
    figures = [f for f in SEED_FIGURES if f in means]
    candidates = StudyRuns("seeds", means.rename(columns={"experiment": "model", "candidate": "experiment"})
                           .assign(seed=0), tuple(figures))
    lines = ["## At the most likely class: each seed, and the mean of several seeds' probabilities", "",
             "From each run's table of its validation recordings, each recording labelled by its most likely class "
             "(no operating point was fitted for a mean of seeds), so this table's F1(A) and challenge score are "
             f"not the served ones above. Mean across folds [{confidence:.0%} t-interval]; the paired rows "
             f"({SEEDS_MEAN} − a seed) compare on each fold's same recordings." + (f" {pooled}" if pooled else ""), ""]
    for model, frame in candidates.runs.groupby("model"):
        summary, pairs = summarise(StudyRuns(candidates.name, frame, candidates.figures), confidence)
        lines += [f"### {model}", "", "| candidate | folds | " + " | ".join(figures) + " |",
                  "|---|---|" + "---|" * len(figures)]
        for _, row in summary.iterrows():
            cells = [f"{row[f + '_mean']:.3f} [{row[interval(f)[0]]:.3f}–{row[interval(f)[1]]:.3f}]" for f in figures]
            lines.append(f"| {row['experiment']} | {row['folds']} | " + " | ".join(cells) + " |")
        with_mean = [row for _, row in pairs.iterrows() if SEEDS_MEAN in (row["a"], row["b"])]
        if with_mean:
            lines += ["", "| a − b | folds | " + " | ".join(figures) + " |", "|---|---|" + "---|" * len(figures)]
        for row in with_mean:
            other = row["b"] if row["a"] == SEEDS_MEAN else row["a"]
            cells = difference_cells(row, figures, SEEDS_MEAN)  # always the mean − a seed
            lines.append(f"| {SEEDS_MEAN} − {other} | {row['folds']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + experiments_paired_markdown(means, figures, confidence)


def experiments_paired_markdown(means: pd.DataFrame, figures: list[str], confidence: float = 0.95) -> str:
    """The seeds' table's figures compared experiment against experiment, candidate by candidate (the
    same seed, or the mean of the same seeds), paired by fold: the most likely class's challenge score
    of two experiments, which the served-point table above cannot give."""
    rows = []
    for candidate, frame in means.groupby("candidate"):
        if frame["experiment"].nunique() < 2:
            continue
        _, pairs = summarise(StudyRuns("pairs", frame.assign(seed=0), tuple(figures)), confidence)
        rows += [(candidate, pair) for _, pair in pairs.iterrows()]
    if not rows:
        return "\n"
    lines = ["", "### Experiment against experiment", "",
             f"The same candidate of two experiments, paired on each fold's same recordings ({confidence:.0%} "
             "t-interval; real when it excludes 0).", "",
             "| a − b | candidate | folds | " + " | ".join(figures) + " |", "|---|---|---|" + "---|" * len(figures)]
    for candidate, pair in rows:
        cells = difference_cells(pair, figures, pair["a"])
        lines.append(f"| {pair['a']} − {pair['b']} | {candidate} | {pair['folds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def rule_name(threshold: float) -> str:
    """Rule B's name in the report: AF when P(A) reaches the declared ``threshold``."""
    return f"B: P(A) ≥ {threshold:g}"


def difference_cells(pair: pd.Series, figures, minuend: str) -> list[str]:
    """A pair's paired differences (``summarise``'s row), each as ``minuend`` − the other with its
    interval and verdict, whichever of the two ``summarise`` put first."""
    sign = 1 if pair["a"] == minuend else -1
    cells = []
    for f in figures:
        low, high = sorted((sign * pair[interval(f)[0]], sign * pair[interval(f)[1]]))
        verdict = "real" if pair[f"{f}_real"] else "within noise"
        cells.append(f"{sign * pair[f + '_difference']:+.3f} [{low:+.3f}, {high:+.3f}] {verdict}")
    return cells


def declared_threshold_figures(study: StudyRuns, tracking_uri: str, threshold: float,
                               columns: tuple[str, ...]) -> pd.DataFrame:
    """Every run's validation recordings under two rules for the served label, on the same recordings:
    the fold's own served operating point (rule A: the run's logged figures) and AF when P(A) reaches
    the declared ``threshold`` (rule B: its table of those recordings scored by the evaluate stage's
    ``score``). One row per (experiment, fold, seed, rule) with ``columns`` (results.csv's names)."""
    from mlflow.tracking import MlflowClient

    from ecgpipe.inference.preprocessing import Decision, served_labels

    client = MlflowClient(tracking_uri)
    rows = []
    for _, run in study.runs.iterrows():
        table = record_predictions(client, run["run_id"])
        class_names = [c.removeprefix("p_") for c in table.columns if c.startswith("p_")]
        probs = table[[f"p_{c}" for c in class_names]].to_numpy(dtype=np.float64)
        labels = served_labels(Decision(AF, threshold, float("nan")), class_names, probs)
        at_threshold = seed_figures(table["actual"], probs, class_names, columns, labels)
        key = {"experiment": run["experiment"], "fold": run["fold"], "seed": run["seed"]}
        rows.append({**key, "rule": "A: served point", **{c: run.get(c, np.nan) for c in columns}})
        rows.append({**key, "rule": rule_name(threshold), **{c: at_threshold.get(c, np.nan) for c in columns}})
    return pd.DataFrame(rows)


def declared_threshold_markdown(figures: pd.DataFrame, gate: dict, threshold: float, confidence: float = 0.95) -> str:
    """Rule B (a declared threshold on P(A)) beside rule A (each fold's served point): per experiment,
    each rule's mean across folds, B − A paired by fold, and how many folds pass the gate's checks
    that a table of recordings answers (``gate``'s recording-level columns)."""
    from ecgpipe.reporting.champion import gate_failures

    columns = tuple(c for c in figures.columns if c not in ("experiment", "fold", "seed", "rule"))
    rule_b = rule_name(threshold)
    checked = {c: check for c, check in gate.items() if is_record_column(c)}
    lines = [f"## A declared threshold: AF when P(A) ≥ {threshold:g} (rule B) beside each fold's served point (rule A)", "",
             "Rule B's figures score each run's table of its validation recordings (MLflow's "
             f"`{RECORD_PREDICTIONS}`) with the evaluate stage's `score`; rule A's are the run's own. Mean across folds "
             f"[{confidence:.0%} t-interval]; B − A paired on each fold's same recordings. Gate: the checks of "
             f"`report.gate` on recordings ({', '.join(checked) or 'none'}); the device shifts were measured at rule A's "
             "point only (docs/decisions/af-operating-point.md).", ""]
    for experiment, frame in figures.groupby("experiment", sort=False):
        candidates = StudyRuns("rules", frame.drop(columns="experiment").rename(columns={"rule": "experiment"}), columns)
        summary, pairs = summarise(candidates, confidence)
        lines += [f"### {experiment}", "", "| rule | folds | " + " | ".join(columns) + " | gate (recordings) |",
                  "|---|---|" + "---|" * (len(columns) + 1)]
        for rule, runs in frame.groupby("rule", sort=False):
            row = summary.set_index("experiment").loc[rule]
            passed = runs.groupby("fold").apply(lambda f: all(not gate_failures(r, checked) for _, r in f.iterrows()))
            cells = [f"{row[c + '_mean']:.3f} [{row[interval(c)[0]]:.3f}–{row[interval(c)[1]]:.3f}]" for c in columns]
            lines.append(f"| {rule} | {int(row['folds'])} | " + " | ".join(cells)
                         + f" | passes on {int(passed.sum())} of {len(passed)} folds |")
        for _, pair in pairs.iterrows():
            cells = difference_cells(pair, columns, rule_b)  # always B − A
            lines.append(f"| B − A | {pair['folds']} | " + " | ".join(cells) + " | |")
        lines.append("")
    return "\n".join(lines) + "\n"


def spread_figure(study: StudyRuns, summary: pd.DataFrame, figure: str | None = None):
    """Each fold's value per experiment (of ``figure``, by default the study's ranking figure), with
    the mean and its interval."""
    from ecgpipe.reporting.plots import plt

    figure = figure or study.ranking
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(summary)), 4.2))
    for x, (_, row) in enumerate(summary.iterrows()):
        values = study.runs.loc[study.runs["experiment"] == row["experiment"], figure]
        ax.scatter(np.full(len(values), x) + np.linspace(-0.12, 0.12, len(values)), values, s=14, alpha=0.7)
        low, high = interval(figure)
        ax.errorbar(x, row[f"{figure}_mean"], yerr=[[row[f"{figure}_mean"] - row[low]],
                                                    [row[high] - row[f"{figure}_mean"]]],
                    fmt="_", color="black", capsize=6, markersize=20)
    ax.set_xticks(range(len(summary)), summary["experiment"], rotation=20, ha="right")
    ax.set(ylabel=figure, title=f"study {study.name}\n{figure} per fold, mean and interval")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def metric_prefix(experiment: str) -> str:
    """The prefix of an experiment's figures among the study run's MLflow metrics: its name, with the
    ``+`` of a rhythm ensemble's (NETWORK+rhythm) spelled ``_plus_`` (MLflow refuses ``+`` in a metric name)."""
    return experiment.replace("+", "_plus_")


def report_study(name: str, tracking_uri: str, experiment_name: str, out_dir: Path,
                 confidence: float = 0.95, task: str | None = None,
                 gate: dict | None = None, af_threshold: float | None = None,
                 against: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``study.md``, ``study.csv`` and ``study.png`` (and with ``gate``, params' ``report.gate``,
    ``gate.csv``: every run judged by it; with ``af_threshold``, ``threshold.csv``: every run's
    recordings labelled AF when P(A) reaches it) into ``out_dir`` and log them, with the aggregate
    figures, to the study's parent MLflow run; its folds' runs become its children."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ecgpipe.core.io import staged_outputs
    from ecgpipe.reporting import plots

    own = study = collect_runs(name, tracking_uri, experiment_name, tuple(gate or ()))  # checks the store first
    client = MlflowClient(tracking_uri)
    other = None
    if against is not None:
        if against == name:
            raise StudyError(f"--against {against}: expected another study than the one reported")
        other = collect_runs(check_study_name(against), tracking_uri, experiment_name, tuple(gate or ()))
        study = against_runs(own, other)
    experiment_id = client.get_experiment_by_name(experiment_name).experiment_id
    parents = {n: study_parent(client, experiment_id, n) for n in study.runs["study"].unique()}  # with --against: two
    settings = {n: parent_settings(p) for n, p in parents.items()}
    seeds = None if other is None else pooled_seeds(own, other, settings)
    summary, pairs = summarise(study, confidence)
    out_dir = Path(out_dir)
    markdown = study_markdown(name, summary, pairs, confidence, study.figures, study.paired) + "\n"
    judged = gate_table(study, gate) if gate else pd.DataFrame()
    if len(judged):
        markdown += gate_markdown(judged, gate, confidence) + "\n"
    declared = pd.DataFrame()
    if af_threshold is not None:
        from ecgpipe.core.results import DEFAULT_CHAMPION_METRIC

        # the gate's recording checks, then F1(A) and (four classes) the challenge score
        columns = tuple(dict.fromkeys([*(c for c in gate or {} if is_record_column(c)),
                                       *(f for f in (DEFAULT_CHAMPION_METRIC, *STUDY_TASK_PAIRED) if f in study.figures)]))
        declared = declared_threshold_figures(study, tracking_uri, af_threshold, columns)
        markdown += declared_threshold_markdown(declared, gate or {}, af_threshold, confidence) + "\n"
    means = seed_means(seeds or study, tracking_uri)
    if len(means):
        pooled = "" if seeds is None else (
            f"The seeds of studies {name} and {against} together: the same `study run --set` values, commit and "
            "machine, other seeds, so each fold's runs are one recipe's seeds.")
        markdown += seeds_markdown(means, confidence, pooled) + "\n"
    markdown += provenance_markdown(study, out_dir, task, af_threshold, settings, against)
    fig = spread_figure(study, summary)
    with staged_outputs() as staged:
        staged.file(out_dir / "study.md").write_text(markdown)
        summary.to_csv(staged.file(out_dir / "study.csv"), index=False, float_format="%.4f")
        if len(means):
            means.to_csv(staged.file(out_dir / "seeds.csv"), index=False, float_format="%.4f")
        if len(judged):
            judged.to_csv(staged.file(out_dir / "gate.csv"), index=False, float_format="%.4f")
        if len(declared):
            declared.to_csv(staged.file(out_dir / "threshold.csv"), index=False, float_format="%.4f")
        fig.savefig(staged.file(out_dir / "study.png"), dpi=110, format="png")

    parent = parents.get(name) or new_study_parent(client, experiment_id, name)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=parent.info.run_id):
        for _, row in summary.iterrows():
            for f in study.figures:
                for stat in ("mean", "sd", "ci_low", "ci_high"):
                    mlflow.log_metric(f"{metric_prefix(row['experiment'])}/{f}_{stat}", float(row[f"{f}_{stat}"]))
        mlflow.log_text(markdown, "study.md")
        mlflow.log_figure(fig, "study.png")
        mlflow.log_table(summary, "study.json")
    plots.close(fig)
    for run_id in study.runs.loc[study.runs["study"] == name, "run_id"]:  # the MLflow UI nests the folds' runs under the study
        client.set_tag(run_id, "mlflow.parentRunId", parent.info.run_id)
    return summary, pairs


MAX_STUDY_NAME = 64  # characters: a study's name is part of each run's DVC experiment name


def check_study_name(name: str) -> str:
    """A study's name goes into MLflow filters and DVC experiment names: plain characters only."""
    from ecgpipe.core.units import is_plain_name

    if not is_plain_name(name):
        raise StudyError(f"--name {name!r}: expected a name of letters, digits, '_', '.' and '-'")
    if len(name) > MAX_STUDY_NAME:
        raise StudyError(f"--name {name[:20]}...: expected at most {MAX_STUDY_NAME} characters (it is part of each "
                         f"run's DVC experiment name, a git ref), got {len(name)}")
    return name
