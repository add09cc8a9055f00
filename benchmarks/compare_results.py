"""A re-baseline's table: every figure of reports/results.csv at an earlier commit against the working
tree's, each with its interval, and whether the new value lies inside the old interval (within the
noise of the validation recordings) or not. With ``--paired FIGURE``, also each experiment's new model
against its old one on the same validation recordings (plots/confusion/NAME/val.csv at both), paired
bootstrap: whether the models differ beyond the noise of the recordings.

    python benchmarks/compare_results.py 469a3d0~1 --rename balanced_chunk_acc=chunk_balanced_accuracy \\
        chunk_acc=chunk_accuracy record_acc=record_accuracy record_balanced_acc=record_balanced_accuracy

``--rename OLD=NEW`` maps a column of the earlier commit to its name now (a figure renamed between
them). Columns without an interval in both (chunk accuracies) are shown without a verdict."""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ecgpipe.core.results import interval, is_interval  # noqa: E402
from ecgpipe.evaluation.metrics import Bootstrap, paired_difference  # noqa: E402


def results_at(commit: str, path: str) -> pd.DataFrame:
    text = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True)
    return pd.read_csv(io.StringIO(text.stdout), dtype={"record": str})


def paired(commit: str, experiments: list[str], figure: str, bootstrap: Bootstrap) -> pd.DataFrame:
    """Each experiment's figure, new model minus old, on the validation recordings both scored."""
    rows = []
    for name in experiments:
        path = f"plots/confusion/{name}/val.csv"
        old, new = results_at(commit, path), pd.read_csv(ROOT / path, dtype={"record": str})
        if old["record"].tolist() != new["record"].tolist():
            raise SystemExit(f"{path}: other validation recordings at {commit}; a paired comparison needs the same")
        classes = [c.removeprefix("p_") for c in new if c.startswith("p_")]
        y = new["actual"].map(classes.index).to_numpy()
        probs = [frame[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64) for frame in (new, old)]
        diff = paired_difference(y, probs[0], probs[1], classes, figure, bootstrap)
        rows.append({"experiment": name, "figure": figure, "new - old": diff.difference, "low": diff.low,
                     "high": diff.high, "beyond noise": diff.excludes_zero})
    return pd.DataFrame(rows)


def compare(old: pd.DataFrame, new: pd.DataFrame, figures: list[str]) -> pd.DataFrame:
    rows = []
    old, new = old.set_index("experiment"), new.set_index("experiment")
    for experiment in new.index.intersection(old.index):
        for name in figures:
            if name not in old or name not in new or pd.isna(old.loc[experiment, name]):
                continue
            low, high = interval(name)
            row = {"experiment": experiment, "figure": name, "old": old.loc[experiment, name],
                   "new": new.loc[experiment, name]}
            if low in old and high in old:
                row.update(old_ci_low=old.loc[experiment, low], old_ci_high=old.loc[experiment, high])
                row["within_old_interval"] = bool(row["old_ci_low"] <= row["new"] <= row["old_ci_high"])
            if low in new and high in new:
                row.update(new_ci_low=new.loc[experiment, low], new_ci_high=new.loc[experiment, high])
            rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    def cell(row, side):
        text = f"{row[side]:.3f}"
        if not pd.isna(row.get(f"{side}_ci_low")):
            text += f" [{row[f'{side}_ci_low']:.3f}–{row[f'{side}_ci_high']:.3f}]"
        return text

    lines = ["| experiment | figure | before | after | change | in the interval before? |", "|---|---|---|---|---|---|"]
    for _, row in table.iterrows():
        verdict = row.get("within_old_interval")
        verdict = "–" if pd.isna(verdict) else ("yes" if verdict else "**no**")
        lines.append(f"| {row['experiment']} | {row['figure']} | {cell(row, 'old')} | {cell(row, 'new')} "
                     f"| {row['new'] - row['old']:+.3f} | {verdict} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the earlier commit")
    parser.add_argument("--results", default="reports/results.csv")
    parser.add_argument("--rename", nargs="*", default=[], help="OLD=NEW column names")
    parser.add_argument("--paired", nargs="*", default=[], help="record figures (f1_A, roc_auc) to compare paired")
    args = parser.parse_args()
    before = results_at(args.commit, args.results)
    renames = dict(pair.split("=", 1) for pair in args.rename)
    before = before.rename(columns={**renames, **{o + s: n + s for o, n in renames.items()
                                                  for s in ("_ci_low", "_ci_high")}})
    after = pd.read_csv(ROOT / args.results)
    shown = [c for c in after if c in before and not is_interval(c) and pd.api.types.is_float_dtype(after[c])]
    print(markdown(compare(before, after, shown)))
    for figure in args.paired:
        table = paired(args.commit, after["experiment"].tolist(), figure, Bootstrap())
        print(table.to_markdown(index=False, floatfmt="+.3f"))
