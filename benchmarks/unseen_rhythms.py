"""How often the two-class AF detectors (trained on N against A only, the notebook's task) call AF
on the rhythms they never saw: CinC's `O` (other rhythms, 2,456 recordings) and `~` (noise, 284).
None of these recordings was in their training or validation. A by-hand measurement through the
user's path, `ecgpipe predict`, with 95% bootstrap intervals:

    python benchmarks/unseen_rhythms.py --records data/records --workdir /tmp/unseen \
        --out reports/four_class/two_class_on_unseen_rhythms.md

`--workdir` keeps each model's predictions (`NAME.csv`); a model whose file is there is not
scored again."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ecgpipe.data.records import read_reference
from ecgpipe.evaluation.metrics import Bootstrap
from ecgpipe.reporting.tables import to_markdown

MODELS = ["raw_resnet-robust_crop", "torch_lstm-robust_crop", "raw_resnet-random_crop", "torch_lstm-random_chunk"]
UNSEEN = ["O", "~"]


def main(records: Path, workdir: Path, out: Path, models: list[str], resamples: int = 1000, seed: int = 12345) -> str:
    reference = pd.DataFrame(read_reference(records).items(), columns=["record", "rhythm"])
    files = [str(records / f"{r}.mat") for r in reference.loc[reference["rhythm"].isin(UNSEEN), "record"]]
    workdir.mkdir(parents=True, exist_ok=True)
    ecgpipe = os.path.join(os.path.dirname(sys.executable), "ecgpipe")
    bootstrap = Bootstrap(resamples=resamples, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for model in models:
        table = workdir / f"{model}.csv"
        if not table.is_file():
            subprocess.run([ecgpipe, "predict", "--model", f"predictors/{model}", "--out", str(table), *files],
                           check=True, stdout=subprocess.DEVNULL)
        scored = pd.read_csv(table, dtype={"record": str}).merge(reference, on="record")
        row = {"experiment": model}
        for rhythm in UNSEEN:
            called = (scored.loc[scored["rhythm"] == rhythm, "label"] == "A").to_numpy()
            draws = called[rng.integers(0, len(called), size=(resamples, len(called)))].mean(axis=1)
            row[f"{rhythm} recordings"] = len(called)
            row[f"{rhythm} called AF"] = called.mean()
            row[f"{rhythm} called AF_ci_low"], row[f"{rhythm} called AF_ci_high"] = bootstrap.interval(draws)
        rows.append(row)
    text = ("# Two-class AF detectors on rhythms they never saw\n\n"
            "The share of CinC's other-rhythm (`O`) and noisy (`~`) recordings that each model of the two-class "
            "task (N against A) calls AF, through `ecgpipe predict` (`benchmarks/unseen_rhythms.py`; 95% "
            "bootstrap intervals over the recordings). 1 minus it is the specificity on that class.\n\n"
            + to_markdown(pd.DataFrame(rows)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=Path, default=Path("data/records"))
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    print(main(args.records, args.workdir, args.out, args.models))
