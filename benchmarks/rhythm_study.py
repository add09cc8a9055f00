"""Issue 24's first candidate aimed at `O` and `~`: rhythm features beside the network, as the 2017
winners used them. A 5-fold study on the real archive, paired across folds, of the four-class task
(`--task four_class`), the notebook's two-class one (`--task two_class`) or AF against the rest
(`--task af_vs_rest`, the false alarms counted on N, O and ~ separately):

- `network`: a network of a finished study (`ecgpipe study run --experiments NAME`, with the
  four_class task's values for four classes), each fold's own predictor scoring that fold's
  validation recordings through `ecgpipe predict`'s path;
- `rhythm`: a gradient-boosted model (scikit-learn's HistGradientBoostingClassifier) on features of
  each recording's beats (wfdb's XQRS detector): RR irregularity, premature beats, beat morphology,
  P-wave and noise figures; fitted on the fold's training recordings only;
- `ensemble`: the mean of the two models' probabilities.

Every setting here (the features, the model's settings, the equal weights) was fixed before any fold
was scored, and the study chooses nothing on its folds: it reports each candidate on all five.

    python benchmarks/rhythm_study.py --task four_class --records data/records --study-repo /tmp/s4/main \\
        --study cv5-four-lstm-robust --experiment torch_lstm-robust_crop --workdir /tmp/rhythm \\
        --out benchmarks/by-hand/reports/four_class/study-cv5-rhythm

`--workdir` keeps the features (`features.csv`) and each fold's network probabilities; what is
there is not computed again. `--against OTHER/folds.csv --against-label NAME` adds each candidate
against the same candidate of another study on the same folds (e.g. another network's), paired
across folds. `--folds 4 --merge EARLIER/folds.csv --merge-label TEXT` scores fold 4 and takes the
other folds from an earlier run of the same study (its committed folds.csv): each row's `run` column
says which run scored it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecgpipe.data.records import load_recordings
from ecgpipe.data.split import fold_indices
from ecgpipe.ensemble.rhythm import feature_table
from ecgpipe.ensemble.trees import BoostedTrees
from ecgpipe.evaluation.metrics import Bootstrap, confidence_intervals, figure, score
from ecgpipe.inference.predictor import Predictor, predict_files
from ecgpipe.reporting.study import t_interval
from ecgpipe.reporting.tables import to_markdown

MAX_LENGTH = 18286
FOLDS, SPLIT_SEED = 5, 12345
CANDIDATES = ("network", "rhythm", "ensemble")


@dataclass(frozen=True)
class Task:
    """The recordings of a task (params.yaml's spectrogram values) and the figures its tables give
    (name in the tables: figure of ecgpipe.evaluation.metrics; the first is the headline)."""

    title: str
    classes: tuple[str, ...]
    min_length: int
    figures: dict[str, str]


TASKS = {
    "four_class": Task("Four classes", ("N", "A", "O", "~"), 2971, {  # params.yaml, tasks.four_class
        "challenge score": "challenge_score", "F1 N": "f1_N", "F1 A": "f1_A", "F1 O": "f1_O", "F1 ~": "f1_~",
        "AF: not-AF on O": "af_specificity_O", "AF: not-AF on O at 95% AF found": "af_specificity_at_sensitivity_95_O",
        "AF ROC AUC": "af_roc_auc"}),
    "two_class": Task("Two classes (N against A)", ("N", "A"), 4000, {  # params.yaml's own values
        "F1 A": "f1_A", "ROC AUC": "roc_auc", "average precision": "average_precision",
        "sensitivity (recall A)": "recall_A", "precision A": "precision_A", "balanced accuracy": "balanced_accuracy"}),
    # params.yaml, tasks.af_vs_rest (added with the task, before its study ran)
    "af_vs_rest": Task("AF against the rest (N, O, ~)", ("rest", "A"), 2971, {
        "F1 A": "f1_A", "ROC AUC": "roc_auc", "AF found (recall A)": "recall_A", "precision A": "precision_A",
        "not-AF on N": "af_specificity_N", "not-AF on O": "af_specificity_O", "not-AF on ~": "af_specificity_~",
        "not-AF on N at 95% AF found": "af_specificity_at_sensitivity_95_N",
        "not-AF on O at 95% AF found": "af_specificity_at_sensitivity_95_O",
        "not-AF on ~ at 95% AF found": "af_specificity_at_sensitivity_95_~"}),
}


# ---------------------------------------------------------------- the study's folds

def _exp_commit(repo: Path, name: str) -> str:
    refs = subprocess.run(["git", "-C", str(repo), "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
                          check=True, capture_output=True, text=True).stdout.split("\n")
    found = [commit for ref, commit in (line.split() for line in refs if line)
             if ref.rsplit("/", 1)[-1] == name]
    if not found:
        raise SystemExit(f"{repo}: no DVC experiment named {name}; expected a finished study (dvc exp ls)")
    return found[0]


def _cached_output(repo: Path, commit: str, out: str, dest: Path) -> Path:
    """Output ``out`` of the experiment at ``commit``, copied from the DVC cache into ``dest``."""
    import yaml

    lock = yaml.safe_load(subprocess.run(["git", "-C", str(repo), "show", f"{commit}:dvc.lock"], check=True,
                                         capture_output=True, text=True).stdout)
    md5 = next(o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", []) if o["path"] == out)
    cache = Path(subprocess.run(["dvc", "cache", "dir"], cwd=repo, check=True, capture_output=True,
                                text=True).stdout.strip()) / "files" / "md5"
    if not md5.endswith(".dir"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache / md5[:2] / md5[2:], dest)
        return dest
    for entry in json.loads((cache / md5[:2] / md5[2:]).read_text()):
        target = dest / entry["relpath"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache / entry["md5"][:2] / entry["md5"][2:], target)
    return dest


def network_probs(task: Task, repo: Path, study: str, experiment: str, fold: int, records_dir: Path, val: list[str],
                  workdir: Path) -> tuple[np.ndarray, float]:
    """P(class) of the fold's own predictor for its validation recordings (``ecgpipe predict``'s path),
    and the task's headline figure that the study's evaluate stage wrote for them (a check of the former)."""
    table = workdir / f"{study}-fold{fold}.csv"
    commit = _exp_commit(repo, f"{study}-fold{fold}-seed{SPLIT_SEED}")
    evaluated = json.loads(subprocess.run(["git", "-C", str(repo), "show", f"{commit}:metrics/{experiment}/eval.json"],
                                          check=True, capture_output=True, text=True).stdout)
    if not table.is_file():
        split = json.loads(_cached_output(repo, commit, "data/split.json", workdir / f"{study}-split-fold{fold}.json").read_text())
        if sorted(split["val"]) != sorted(val):
            raise SystemExit(f"fold {fold}: the study's validation recordings differ from this script's fold")
        folder = _cached_output(repo, commit, f"predictors/{experiment}", workdir / f"{study}-predictor-fold{fold}")
        rows = predict_files(Predictor.from_folder(folder), [str(records_dir / f"{r}.mat") for r in val])
        pd.DataFrame(rows).to_csv(table, index=False)
    scored = pd.read_csv(table, dtype={"record": str}).set_index("record").loc[val]
    if scored["error"].notna().any():
        raise SystemExit(f"fold {fold}: the network could not score {scored['error'].dropna().index[0]}")
    headline = figure(evaluated["val"]["record"], next(iter(task.figures.values())))
    return scored[[f"p_{c}" for c in task.classes]].to_numpy(np.float64), float(headline)


def rhythm_probs(features: pd.DataFrame, y: np.ndarray, train: np.ndarray, val: np.ndarray, seed: int) -> np.ndarray:
    """The gradient-boosted model fitted on the fold's training recordings: P(class) on its validation ones.
    Settings fixed before any fold was scored (``ecgpipe.ensemble.trees.SETTINGS``)."""
    trees = BoostedTrees.fit(features.iloc[train].to_numpy(), y[train], seed)
    return trees.predict_proba(features.iloc[val].to_numpy())


def main(task: Task, records: Path, study_repo: Path, study: str, experiment: str, workdir: Path, out: Path,
         resamples: int = 1000, against: Path | None = None, against_label: str = "",
         folds: tuple[int, ...] = tuple(range(FOLDS)), run_label: str = "this run", merge: Path | None = None,
         merge_label: str = "an earlier run") -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    classes = list(task.classes)
    recordings = load_recordings(records, classes, task.min_length, MAX_LENGTH)
    y, ids = recordings.labels, np.asarray(recordings.record_ids)
    sources = np.asarray(recordings.source_labels)  # each recording's own label: false alarms per label
    features = feature_table(recordings, workdir / "features.csv")
    del recordings  # the padded signals: the largest array, not needed past the features
    bootstrap = Bootstrap(resamples=resamples, seed=SPLIT_SEED)
    rows = []
    for fold in folds:  # a study's finished folds; all five unless told
        parts = fold_indices(y, FOLDS, fold, 0.0, SPLIT_SEED)
        train, val = parts["train"], parts["val"]
        network, evaluated = network_probs(task, study_repo, study, experiment, fold, records, ids[val].tolist(), workdir)
        probs = {"network": network, "rhythm": rhythm_probs(features, y, train, val, SPLIT_SEED)}
        probs["ensemble"] = (probs["network"] + probs["rhythm"]) / 2
        for name in CANDIDATES:
            point = score(y[val], probs[name], classes, sources[val])
            ci = confidence_intervals(y[val], probs[name], classes, bootstrap, sources[val])
            row = {"fold": fold, "candidate": name, "recordings": len(val), "run": run_label,
                   f"{headline(task)} (the study's evaluate stage)": evaluated if name == "network" else np.nan}
            for label, key in task.figures.items():
                row[label] = float(figure(point, key))
                row[f"{label}_ci_low"], row[f"{label}_ci_high"] = (float(v) for v in figure(ci, key))
            rows.append(row)
    per_fold = pd.DataFrame(rows)
    if merge is not None:
        per_fold = merged(per_fold, pd.read_csv(merge), merge, merge_label)
    out.mkdir(parents=True, exist_ok=True)
    per_fold.to_csv(out / "folds.csv", index=False)
    text = study_text(task, per_fold, study, experiment)
    if against is not None:
        text += against_text(task, per_fold, pd.read_csv(against), against_label)
    (out / "study.md").write_text(text)
    return text


def merged(per_fold: pd.DataFrame, earlier: pd.DataFrame, path: Path, label: str) -> pd.DataFrame:
    """This run's folds and an earlier run's other folds of the same study, in fold order. Refused when
    a fold is in both, or when the earlier file holds other figures (another task)."""
    earlier = earlier.assign(run=earlier.get("run", label))
    if set(earlier.columns) != set(per_fold.columns):
        raise SystemExit(f"--merge {path}: its columns differ from this run's; expected a folds.csv of the same task")
    if both := sorted(set(earlier["fold"]) & set(per_fold["fold"])):
        raise SystemExit(f"--merge {path}: fold(s) {both} are in it and in this run; expected other folds")
    # both list each fold's candidates in CANDIDATES' order: a stable sort by fold keeps it
    return pd.concat([earlier[per_fold.columns], per_fold]).sort_values("fold", kind="stable").reset_index(drop=True)


def paired(task: Task, a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Mean [95% t-interval] of a − b per figure; a and b hold the same folds in the same order."""
    row = {}
    for label in task.figures:
        mean, _, low, high = t_interval(a[label].to_numpy() - b[label].to_numpy())
        row[label] = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]{' real' if low > 0 or high < 0 else ''}"
    return row


def against_text(task: Task, per_fold: pd.DataFrame, other: pd.DataFrame, label: str) -> str:
    """Each candidate against the same candidate of another study on the same folds (its folds.csv),
    paired across folds: the comparison with the recipe this study's network would replace."""
    rows = []
    for name in CANDIDATES:
        mine = per_fold[per_fold["candidate"] == name].sort_values("fold")
        theirs = other[(other["candidate"] == name) & other["fold"].isin(mine["fold"])].sort_values("fold")
        if any(mine[c].tolist() != theirs[c].tolist() for c in ("fold", "recordings")):
            raise SystemExit(f"--against: {label}'s folds or recordings differ from this study's; "
                             "expected the same folds")
        rows.append({"pair": f"{name} − {label}'s {name}", **paired(task, mine, theirs)})
    return (f"\nAgainst {label} on the same folds (mean [95% t-interval] of the per-fold differences; `real` when "
            "it excludes 0):\n\n" + to_markdown(pd.DataFrame(rows)) + "\n")


def _runs_phrase(per_fold: pd.DataFrame) -> str:
    """Which run scored which folds, when more than one did (a study merged with --merge)."""
    if "run" not in per_fold or per_fold["run"].nunique() < 2:
        return ""
    parts = [f"{_fold_list(frame)}: {run}" for run, frame in per_fold.groupby("run", sort=False)]
    return f"The folds come from {per_fold['run'].nunique()} runs ({'; '.join(parts)}).\n\n"


def _fold_list(per_fold: pd.DataFrame) -> str:
    """'fold 4' or 'folds 0, 1, 2, 3': the folds a table holds."""
    folds = sorted(per_fold["fold"].unique())
    return f"fold{'s' if len(folds) > 1 else ''} {', '.join(str(f) for f in folds)}"


def _folds_phrase(per_fold: pd.DataFrame) -> str:
    n = per_fold["fold"].nunique()
    return f"the {FOLDS} folds" if n == FOLDS else f"{n} of the {FOLDS} folds ({_fold_list(per_fold)})"


def headline(task: Task) -> str:
    return next(iter(task.figures))


def study_text(task: Task, per_fold: pd.DataFrame, study: str, experiment: str) -> str:
    summary, pairs = [], []
    for name in CANDIDATES:
        frame = per_fold[per_fold["candidate"] == name].sort_values("fold")
        row = {"candidate": name, "folds": len(frame)}
        for label in task.figures:
            mean, sd, low, high = t_interval(frame[label].to_numpy())
            row[label] = f"{mean:.3f} ± {sd:.3f} [{low:.3f}–{high:.3f}]"
        summary.append(row)
    base = per_fold[per_fold["candidate"] == "network"].sort_values("fold")
    for name in ("ensemble", "rhythm"):
        frame = per_fold[per_fold["candidate"] == name].sort_values("fold")
        pairs.append({"pair": f"{name} − network", **paired(task, frame, base)})
    fold_table = per_fold[["fold", "candidate", "recordings", *task.figures,
                           f"{headline(task)} (the study's evaluate stage)"]].round(3)
    return (
        f"# {task.title}: rhythm features beside {experiment}, {FOLDS}-fold study"
        f"{'' if per_fold['fold'].nunique() == FOLDS else ', ' + _folds_phrase(per_fold) + ' only'}\n\n"
        f"`benchmarks/rhythm_study.py` on the real archive: the network is each fold's "
        f"`{experiment}` of the study `{study}`; `rhythm` is a gradient-boosted "
        "model on beat features (wfdb XQRS), fitted on the fold's training recordings; `ensemble` is "
        "the mean of their probabilities. Every setting was fixed before any fold was scored; nothing "
        "is chosen on these folds.\n\n" + _runs_phrase(per_fold) +
        f"Mean ± SD across {_folds_phrase(per_fold)} [95% t-interval of the mean]:\n\n"
        + to_markdown(pd.DataFrame(summary)) +
        "\n\nPaired differences across folds (mean [95% t-interval]; `real` when it excludes 0):\n\n"
        + to_markdown(pd.DataFrame(pairs)) + "\n\nPer fold (95% bootstrap intervals in folds.csv):\n\n"
        + to_markdown(fold_table) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="four_class")
    parser.add_argument("--records", type=Path, default=Path("data/records"))
    parser.add_argument("--study-repo", type=Path, required=True, help="the clone that ran the study")
    parser.add_argument("--study", required=True, help="the study's name (ecgpipe study run --name)")
    parser.add_argument("--experiment", required=True, help="the network the study trained")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/by-hand/reports/four_class/study-cv5-rhythm"))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--against", type=Path, help="folds.csv of another study on the same folds: paired differences")
    parser.add_argument("--against-label", default="the other study", help="its name in the table")
    parser.add_argument("--folds", type=int, nargs="+", choices=range(FOLDS), default=list(range(FOLDS)),
                        help="the folds to score (default: all)")
    parser.add_argument("--run-label", default="this run", help="this run's rows in folds.csv (column `run`)")
    parser.add_argument("--merge", type=Path, help="folds.csv of an earlier run of the same study: its other folds")
    parser.add_argument("--merge-label", default="an earlier run", help="its rows' `run` where it has none")
    args = parser.parse_args()
    print(main(TASKS[args.task], args.records, args.study_repo, args.study, args.experiment, args.workdir, args.out,
               args.resamples, args.against, args.against_label, tuple(args.folds), args.run_label, args.merge,
               args.merge_label))
