"""The `ship` stage: the served AF detector as a folder kept in git (``pretrained/``), so that a fresh
clone classifies recordings before any training, and its model card.

What ``models:/<report.registered_model>@champion`` serves: a task's champion where its `task_serve`
stage registered it there (it passed the task's gate), else the notebook's report's champion. The
folder is a DVC output with ``cache: false``: `dvc repro` rewrites it when the champion changes, and
`dvc status` says when the committed copy is stale.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ecgpipe.core.errors import StoreError
from ecgpipe.core.io import file_digest, read_json, staged_outputs, write_json
from ecgpipe.ensemble.model import ARTIFACT, ENSEMBLE_SPEC, is_ensemble, network_files
from ecgpipe.reporting.model_card import Shipped, model_card

MODEL_DIR, CARD, SHIPPED = "model", "MODEL_CARD.md", "shipped.json"
TASKS_DIR = Path("tasks")  # a task's outputs: tasks/NAME/, as dvc.yaml's task_* stages write them


def outputs_root(task: str | None) -> Path:
    """Where an experiment's outputs (predictors/, metrics/, reports/, plots/) are: the workspace's
    for the notebook's task (None), else ``tasks/NAME``."""
    return Path(".") if task is None else TASKS_DIR / task


def served_source(registered_model: str, workspace_champion: dict,
                  served: dict[str, dict]) -> tuple[Shipped, Path] | None:
    """What ``registered_model@champion`` serves and the root of its outputs (``.`` or ``tasks/NAME``):
    the first task (by name) that registered its champion as ``registered_model``, else the workspace's
    champion; None when there is none (no experiment passed the gate)."""
    for task, entry in sorted(served.items()):
        if entry.get("serves") == registered_model and "version" in entry:  # registered: it passed its gate
            return Shipped(registered_model, entry["experiment"], entry["run_id"], task, entry["why"]), outputs_root(task)
    if workspace_champion.get("experiment") is None:
        return None
    why = f"the notebook's champion: {workspace_champion.get('how', '')}"
    if served:
        why += "; no task's champion passed its gate to replace it"
    return Shipped(registered_model, workspace_champion["experiment"], workspace_champion["run_id"], None, why), outputs_root(None)


def run_ship(registered_model: str, confidence: float, workspace_champion: Path, tasks: list[str], root: Path,
             out_dir: Path) -> dict:
    """The `ship` stage: copy the served experiment's predictor into ``out_dir/model``, write its model
    card and ``shipped.json`` (what it is and where from). ``root``: the workspace (outputs' paths are
    relative to it); ``tasks``: the tasks of params.yaml, whose `task_serve` stages say what they serve."""
    root = Path(root)
    served = {task: read_json(root / outputs_root(task) / "reports" / "served.json") for task in tasks}
    workspace = read_json(workspace_champion)
    source = served_source(registered_model, workspace, served)
    if source is None:  # nothing passed the gate: nothing is shipped, and predict says so
        summary = {"registered_model": registered_model, "experiment": None,
                   "why": f"no champion: {workspace.get('how', 'none chosen')}"}
        with staged_outputs() as staged:
            write_json(staged.dir(Path(out_dir)) / SHIPPED, summary)
        return summary
    shipped, base = source
    predictor = root / base / "predictors" / shipped.experiment
    evaluation = read_json(root / base / "metrics" / shipped.experiment / "eval.json")
    shifts = pd.read_csv(root / base / "reports" / "shifts.csv")
    shifts = shifts[shifts["experiment"] == shipped.experiment]
    if not (predictor / "MLmodel").is_file():
        raise StoreError(f"{predictor}: no MLflow model (MLmodel); expected the evaluate stage's predictor; "
                         "rerun the pipeline (dvc repro)")
    files = sorted(p for p in predictor.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    model = read_json(network_files(predictor) / "model.json")
    ensemble = read_json(predictor / "artifacts" / ARTIFACT / ENSEMBLE_SPEC) if is_ensemble(predictor) else None
    card = model_card(shipped, model, evaluation, shifts, size, confidence, ensemble)
    summary = {"registered_model": registered_model, "experiment": shipped.experiment, "run_id": shipped.run_id,
               "task": shipped.task, "why": shipped.why, "source": str(base / "predictors" / shipped.experiment),
               "size_bytes": size, "files": {str(p.relative_to(predictor)): file_digest(p) for p in files}}
    with staged_outputs() as staged:
        target = staged.dir(Path(out_dir))
        shutil.copytree(predictor, target / MODEL_DIR)
        (target / CARD).write_text(card)
        write_json(target / SHIPPED, summary)
    return summary


def shipped_model(folder: Path) -> tuple[Path, str]:
    """The model shipped in ``folder`` (the ship stage's output) and a line that names it; a
    StoreError saying why when nothing is shipped there."""
    folder = Path(folder)
    try:
        summary = read_json(folder / SHIPPED)
    except FileNotFoundError:
        raise StoreError(f"{folder / SHIPPED}: not found; expected the ship stage's output (run `dvc repro ship`), "
                         "or give a model with --model") from None
    if summary.get("experiment") is None:
        raise StoreError(f"{folder / SHIPPED}: nothing is shipped ({summary.get('why')}); give a model with --model")
    where = "the notebook's task" if summary.get("task") is None else f"task {summary['task']}"
    return folder / MODEL_DIR, (f"model: {folder / MODEL_DIR}, the shipped {summary['registered_model']}@champion: "
                                f"{summary['experiment']} of {where} (MLflow run {summary['run_id']}; "
                                f"card: {folder / CARD})")
