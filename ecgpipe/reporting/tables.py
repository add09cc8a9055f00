"""The report's tables and sections: results columns, markdown, paired comparisons with the champion."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecgpipe.core.results import (
    AF,
    AF_ALARM_PREFIX,
    MIN_SHIFT_ROC_AUC,
    RECORD,
    UNSEEN,
    WORST_SHIFT,
    figure,
    figure_columns,
    interval,
    is_interval,
    is_record_column,
    joined,
    record_column,
    record_figure,
    with_interval,
)
from ecgpipe.evaluation.metrics import Bootstrap, paired_difference


def af_alarm_columns(table: pd.DataFrame) -> list[str]:
    """The columns (and their intervals) of a model read as an AF alarm (more than two classes, or AF
    against REST_LABEL): AF found (the recall of A), then the false alarms and the ranking."""
    alarm = [c for c in table if c.startswith(AF_ALARM_PREFIX)]
    found = [c for c in table if c.startswith(record_column(joined("recall", AF)))] if alarm else []
    return found + alarm


def af_alarm_section(table: pd.DataFrame) -> str:
    """ "Is this AF?" answered by each model's P(A): AF found, and false alarms on each other label."""
    columns = af_alarm_columns(table)
    if not columns:
        return ""
    return ("\n## As an AF detector\n\nEach model's answer to \"is this AF?\": its served label, AF when A is its most likely "
            "class or, where the task fits an operating point on recordings held out of training (`threshold_A` "
            "in results.csv), when P(A) reaches that threshold. "
            "`record_recall_A` is the share of AF recordings called AF; `af_specificity_<label>` the share of the "
            "recordings of that label (N, O, ~) not called AF (1 − its false-alarm rate); `..._at_sensitivity_95_<label>` the same "
            "at the P(A) threshold that finds 95% of the AF recordings (a point of each curve, read on these "
            "recordings, not a threshold chosen for deployment); `af_roc_auc` ranks P(A) of AF against every "
            "other recording.\n\n" + to_markdown(table[["experiment", *columns]]))


def unseen_columns_of(table: pd.DataFrame) -> list[str]:
    return [c for c in table if c.startswith(UNSEEN + "_")]


def unseen_section(table: pd.DataFrame) -> str:
    """AF's false alarms on the recordings of labels the task never trained on (the evaluate stage's)."""
    columns = [c for c in unseen_columns_of(table) if not is_interval(c)]
    if not columns:
        return ""
    return ("\n## On rhythms the task never saw\n\nEvery recording of the archive whose label is not one of the "
            "task's classes (for N against A: CinC's other rhythms `O` and noisy recordings `~`), scored as `ecgpipe "
            "predict` scores it: `af_specificity_<label>` is the share not called AF (1 − the false-alarm rate a user "
            "meets on such recordings). None of them was in training or validation.\n\n"
            + to_markdown(table[["experiment", *unseen_columns_of(table)]]))


def robust_section(versus: pd.DataFrame | None, metric: str) -> str:
    if versus is None:
        return ""
    return (f"\n### Robust against plain\n\nEach experiment with robustness options against each plain one of the "
            f"same network: `difference` is robust − plain in `{metric}` on the unshifted recordings (paired "
            "bootstrap; an interval that includes 0 is within noise), beside both worst-shift figures.\n\n"
            + to_markdown(versus))


def shift_section(shifts: pd.DataFrame | None, table: pd.DataFrame) -> str:
    """Experiment x shift tables of F1 (with its change) and ROC AUC, and each experiment's worst shift."""
    if shifts is None:
        return ""
    positive = shifts["positive"].iloc[0]

    def wide(value: str, change: str | None) -> pd.DataFrame:
        cells = shifts.apply(lambda r: f"{r[value]:.3f}" + (f" ({r[change]:+.3f})" if change else ""), axis=1)
        out = shifts.assign(cell=cells).pivot(index="experiment", columns="shift", values="cell")
        return out.loc[[e for e in table["experiment"] if e in out.index], list(dict.fromkeys(shifts["shift"]))]

    worst_f1 = joined(WORST_SHIFT, "f1", positive)
    worst = table.set_index("experiment")[[WORST_SHIFT, worst_f1, joined(worst_f1, "change"), MIN_SHIFT_ROC_AUC]]
    return (f"\n## Under device shifts\n\nThe validation recordings scored again under each shift of "
            f"`evaluate.shifts`, one at a time, through `ecgpipe predict`'s path (README, \"Recordings from other "
            f"devices\"). F1 of {positive} per recording, with its paired change from the unshifted figure in "
            f"brackets (`reports/shifts.csv` has every interval):\n\n"
            + to_markdown(wide("f1", "f1_change").reset_index())
            + "\nROC AUC per recording:\n\n" + to_markdown(wide("roc_auc", None).reset_index())
            + f"\nEach experiment's worst shift (lowest F1 of {positive}), and its lowest ROC AUC under any shift. "
            "The champion is chosen on the unshifted figures; these are shown beside it:\n\n"
            + to_markdown(worst.reset_index()))


def _cell(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown table; a column with ``_ci_low``/``_ci_high`` beside it shows ``0.957 [0.930–0.980]``
    (``-0.041 [-0.079, -0.006]`` when the interval reaches below 0)."""
    shown = [c for c in table.columns if not is_interval(c)]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, row in table.iterrows():
        cells = []
        for column in shown:
            text = _cell(row[column])
            low_column, high_column = interval(column)
            if low_column in table and not pd.isna(row[low_column]):
                low, high = row[low_column], row[high_column]
                text += f" [{low:.3f}–{high:.3f}]" if low >= 0 else f" [{low:.3f}, {high:.3f}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def validation_probabilities(name: str, plots_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(record ids, labels, probabilities, class names) of experiment NAME's validation recordings,
    sorted by record, from what its evaluate stage wrote (``plots/confusion/NAME/val.csv``, whose
    ``p_<class>`` columns are in the model's class order)."""
    frame = pd.read_csv(Path(plots_dir) / "confusion" / name / "val.csv", dtype={"record": str, "actual": str})
    classes = [c.removeprefix("p_") for c in frame.columns if c.startswith("p_")]
    frame = frame.sort_values("record")  # the same recordings in the same order for every experiment
    y = frame["actual"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return frame["record"].to_numpy(), y, frame[[f"p_{c}" for c in classes]].to_numpy(), classes


def paired_validation_difference(a: str, b: str, figure_name: str, plots_dir: Path, bootstrap: Bootstrap):
    """``a - b`` of one recording-level figure on the same validation recordings (paired bootstrap)."""
    ids, y, probs_a, classes = validation_probabilities(a, plots_dir)
    ids_b, _, probs_b, classes_b = validation_probabilities(b, plots_dir)
    if not (np.array_equal(ids, ids_b) and classes == classes_b):
        raise ValueError(f"{a} and {b} were not evaluated on the same validation recordings and classes; rerun "
                         "their evaluate stages")
    return paired_difference(y, probs_a, probs_b, classes, figure_name, bootstrap)


def paired_comparisons(table: pd.DataFrame, metric: str, reference: str, plots_dir: Path, bootstrap: Bootstrap,
                       is_champion: bool = True) -> pd.DataFrame | None:
    """Each experiment against ``reference`` (the champion) on ``metric`` (a ``record_*`` column): the
    paired bootstrap difference ``experiment - reference`` over the same validation recordings, from
    the per-recording probabilities that the evaluate stages wrote (``plots/confusion/NAME/val.csv``).
    None for a chunk-level metric, whose units are not the recordings."""
    if not is_record_column(metric):
        return None
    rows = []
    for name in table["experiment"]:
        diff = paired_validation_difference(name, reference, record_figure(metric), plots_dir, bootstrap)
        verdict = (("champion" if is_champion else "reference") if name == reference else "worse" if diff.high < 0
                   else "better" if diff.low > 0 else "not distinguishable")
        rows.append({"experiment": name, **with_interval("difference", diff.difference, diff.low, diff.high),
                     "verdict": verdict})
    return pd.DataFrame(rows)


def comparison_section(paired: pd.DataFrame | None, table: pd.DataFrame, metric: str, bootstrap: Bootstrap) -> str:
    if paired is None:
        return (f"\n## Compared with the champion\n\nThe champion metric `{metric}` is a chunk-level figure: "
                "the paired bootstrap over recordings applies to `record_*` metrics only.\n")
    reference = paired.loc[paired["verdict"].isin(["champion", "reference"]), "experiment"].iloc[0]
    is_champion = (paired["verdict"] == "champion").any()
    merged = table[["experiment", metric, *interval(metric)]].merge(paired, on="experiment")
    tied = paired.loc[paired["verdict"] == "not distinguishable", "experiment"].tolist()
    level = f"{bootstrap.confidence:.0%}"
    who = (f"The champion, `{reference}`, chosen by the gate below" if is_champion else
           f"No experiment passed the gate; the reference is `{reference}`, the highest `{metric}`")
    text = (f"\n## Compared with the champion\n\n"
            f"{who}. Each experiment's difference in `{metric}` from it is measured on the same recordings by a "
            f"paired bootstrap ({bootstrap.resamples:,} stratified resamples, {level} interval): an interval below 0 "
            "means worse beyond the noise of this validation set, above 0 better.\n\n" + to_markdown(merged) + "\n")
    if tied:
        text += (f"**Not distinguishable from it** at {level} (their intervals include 0): "
                 + ", ".join(f"`{n}`" for n in tied) + ". Their digits above do not rank them.\n")
    else:
        text += "Every other experiment differs from it beyond the noise.\n"
    return text


def champion_section(decision, metric: str, gate: dict, prefer: list, order: list[str], alias: str | None) -> str:
    """The gate's table (eligible or not, and why; candidates) and the choice, in words."""
    checks = ", ".join(f"`{f}` {'≥' if c.at_least is not None else '≤'} "
                       f"{c.at_least if c.at_least is not None else c.at_most:g}" for f, c in gate.items()) or "none"
    tie = ", then ".join([f"`{p.figure}` (within {p.tolerance:g})" for p in prefer]
                         + (["`report.order` " + " > ".join(f"`{n}`" for n in order)] if order else [])
                         + [f"the highest `{metric}`", "the name"])
    shown = decision.table.assign(eligible=decision.table["eligible"].map({True: "yes", False: "no"}),
                                  candidate=decision.table["candidate"].map({True: "yes", False: ""}),
                                  chosen=decision.table["chosen"].map({True: "**champion**", False: ""}))
    if decision.champion is None:
        outcome = (f"**No champion**: {decision.how}. The Model Registry was not changed (the previous "
                   "`@champion`, if any, stays).")
    else:
        outcome = f"**Champion: `{decision.champion}`** ({decision.how}); registered with the alias `@{alias}`."
    return ("\n## Champion: the gate and the choice\n\n"
            f"Eligible: every deployment check of `report.gate` passes ({checks}). Candidates: the eligible "
            f"experiment with the highest `{metric}` and every eligible one not distinguishable from it (paired "
            f"bootstrap). Tie-break among candidates: {tie}.\n\n" + to_markdown(shown) + "\n" + outcome + "\n")


def held_out_test_section(champion: str, test: dict | None) -> str:
    if test is None:
        return ""
    record = test[RECORD]
    names = [record_figure(c) for c in figure_columns(test) if is_record_column(c)]  # results.csv's, in its order
    lines = ["| figure | value |", "|---|---|"]
    for name in names:
        low, high = figure(record["ci"], name)
        lines.append(f"| {name} | {figure(record, name):.3f} [{low:.3f}–{high:.3f}] |")
    return (f"\n## Held-out test recordings: the champion, once\n\n`{champion}`, chosen on validation, scored on "
            f"the {record['n']:,} test recordings that no stage looked at before:\n\n" + "\n".join(lines) + "\n")
