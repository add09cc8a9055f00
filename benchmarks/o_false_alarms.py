"""What the O recordings an AF detector calls AF look like: a diagnosis for the next levers, not a
figure to choose by (it reads the reported folds; a lever it suggests is judged on its own study).

For every fold of a study's experiment, the threshold on P(A) that finds 95% of the fold's AF
recordings (as the study report's ``..._at_sensitivity_95_O``), then the median rhythm features
(the ``features`` stage's table) of AF, of O called AF and of O not called AF.

    MLFLOW_TRACKING_URI=sqlite:////path/to/study-mlflow.db python benchmarks/o_false_alarms.py \\
        --study cv5-four-rhythm --experiment raw_resnet-robust_crop+rhythm --features data/features.csv \\
        --mlflow-experiment ecgpipe-four-class
"""
import argparse
import os

import pandas as pd

FEATURES = ["rr_cv", "irregular_share", "premature_share", "rr_sample_entropy", "p_wave_ratio", "beat_corr_mean",
            "beats_per_10s"]


def main() -> None:
    from mlflow.tracking import MlflowClient

    from ecgpipe.evaluation.calibration import operating_threshold
    from ecgpipe.evaluation.metrics import AF_SENSITIVITY
    from ecgpipe.reporting.study import collect_runs, record_predictions

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--features", required=True, help="the features stage's table (data/features.csv)")
    parser.add_argument("--mlflow-experiment", required=True, help="the task's mlflow.experiment_name")
    args = parser.parse_args()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    # the study report's runs: finished, the newest per fold
    runs = collect_runs(args.study, client.tracking_uri, args.mlflow_experiment).runs
    tables = []
    for run in runs[runs["experiment"] == args.experiment].itertuples():
        table = record_predictions(client, run.run_id).copy()
        threshold = operating_threshold(table["p_A"].to_numpy(), (table["actual"] == "A").to_numpy(),
                                        AF_SENSITIVITY)  # finds at least 95% of the fold's AF
        tables.append(table.assign(fold=run.fold, alarm=table["p_A"] >= threshold))
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
