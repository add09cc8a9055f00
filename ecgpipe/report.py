"""The `report` stage: every experiment's figures in one table, beside the notebook's own."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ecgpipe.io import atomic_path, read_json, write_json
from ecgpipe.params import Params

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


def experiment_row(name: str, params: Params, metrics_dir: Path, split: str = "val") -> dict:
    experiment = params.experiment(name)
    evaluation = read_json(Path(metrics_dir) / name / "eval.json")[split]
    speed = read_json(Path(metrics_dir) / name / "speed.json")
    record = evaluation["record"]
    row = {
        "experiment": name,
        "model": experiment.model,
        "loader": experiment.loader,
        "epochs": experiment.epochs,
        "notebook_balanced_chunk_acc": NOTEBOOK_BALANCED_CHUNK_ACC.get((experiment.model, experiment.loader)),
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
    return row


def results_table(params: Params, metrics_dir: Path, split: str = "val") -> pd.DataFrame:
    return pd.DataFrame([experiment_row(name, params, metrics_dir, split) for name in params.experiments])


def to_markdown(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "—"
        if isinstance(value, float):
            return f"{value:.3f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v.item() if hasattr(v, "item") else v) for v in row) + " |")
    return "\n".join(lines) + "\n"


CHAMPION = "champion"


def register_champion(table: pd.DataFrame, metric: str, models_dir: Path, registered_model: str) -> dict:
    """Register the best experiment's predictor in the MLflow Model Registry with the alias
    ``champion``; a new version only when the champion's run changed."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ecgpipe.experiment import RUN_FILE
    from ecgpipe.serving import ARTIFACT

    if metric not in table:
        raise ValueError(f"params report.champion_metric: {metric!r} is not a column of results.csv: {list(table)}")
    best = table.loc[table[metric].astype(float).idxmax()]
    run = read_json(Path(models_dir) / best["experiment"] / RUN_FILE)
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


def run_report(params: Params, metrics_dir: Path, models_dir: Path, out_dir: Path) -> pd.DataFrame:
    """Write ``results.csv``, ``results.md``, ``comparison.png`` and ``champion.json`` into
    ``out_dir``, and give the best experiment the champion alias in the Model Registry."""
    from ecgpipe import plots  # matplotlib: only when drawing

    table = results_table(params, metrics_dir)
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "results.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    shown = table.drop(columns=["model", "loader"])
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(
            "# Results on the validation recordings\n\n"
            "Made by the `report` stage from `metrics/<experiment>/eval.json` and `train.json`.\n"
            "`notebook_balanced_chunk_acc` is the course notebook's figure; `balanced_chunk_acc` ours on\n"
            "the same kind of set (validation chunks, AF oversampled to half). `record_*` score whole\n"
            "recordings as they occur (about 13% AF), each recording's chunks aggregated into one probability.\n\n"
            + to_markdown(shown)
        )
    fig = plots.comparison(table, [m for m in COMPARED if m in table], "validation: chunks (balanced) and recordings")
    with atomic_path(out_dir / "comparison.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    champion = register_champion(table, params.report.champion_metric, models_dir, params.report.registered_model)
    write_json(out_dir / "champion.json", champion)
    return table
