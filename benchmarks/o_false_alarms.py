"""What the O recordings an AF detector calls AF look like: a diagnosis for the next levers, not a
figure to choose by (it reads the reported folds; a lever it suggests is judged on its own study).

For every fold of a study's experiment, the threshold on P(A) that finds 95% of the fold's AF
recordings (as the study report's ``..._at_sensitivity_95_O``), then the median rhythm features
(the ``features`` stage's table) of AF, of O called AF and of O not called AF.

    MLFLOW_TRACKING_URI=sqlite:////path/to/study-mlflow.db python benchmarks/o_false_alarms.py \\
        --study cv5-four-rhythm --experiment raw_resnet-robust_crop+rhythm --features data/features.csv
"""
import argparse
import os

import numpy as np
import pandas as pd

FEATURES = ["rr_cv", "irregular_share", "premature_share", "rr_sample_entropy", "p_wave_ratio", "beat_corr_mean",
            "beats_per_10s"]


def main() -> None:
    from mlflow.tracking import MlflowClient

    from ecgpipe.reporting.study import record_predictions

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--features", required=True, help="the features stage's table (data/features.csv)")
    args = parser.parse_args()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    tables = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], filter_string=f"tags.study = '{args.study}'"):
            if run.info.run_name == args.experiment and "fold" in run.data.tags and run.info.status == "FINISHED":
                table = record_predictions(client, run.info.run_id).copy()
                p_af = np.sort(table.loc[table["actual"] == "A", "p_A"].to_numpy())
                threshold = p_af[int(np.floor(0.05 * len(p_af)))]  # finds at least 95% of the fold's AF
                tables.append(table.assign(fold=int(run.data.tags["fold"]), alarm=table["p_A"] >= threshold))
    if not tables:
        raise SystemExit(f"no finished run {args.experiment} of study {args.study} in {client.tracking_uri}")
    table = pd.concat(tables).join(pd.read_csv(args.features).set_index("record"), on="record")
    af, other = table[table["actual"] == "A"], table[table["actual"] == "O"]
    groups = {"AF": af, "O called AF": other[other["alarm"]], "O not called AF": other[~other["alarm"]]}
    print(f"{len(tables)} folds; O called AF at 95% of AF found: {len(groups['O called AF'])} of {len(other)} "
          f"({len(groups['O called AF']) / len(other):.3f})")
    print(pd.DataFrame({name: group[FEATURES].median() for name, group in groups.items()}).round(3).to_markdown())
    alarms = groups["O called AF"]
    print(f"O called AF with rr_cv at least AF's lower quartile: {(alarms['rr_cv'] >= af['rr_cv'].quantile(0.25)).mean():.3f}; "
          f"their P(A) at least 0.5: {(alarms['p_A'] >= 0.5).mean():.3f}")


if __name__ == "__main__":
    main()
