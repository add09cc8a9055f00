"""Tasks: named variants of the whole pipeline (such as the four-class CinC task), run as DVC experiments.

``params.yaml`` describes the notebook's two-class task, which ``dvc repro`` runs. A task in its
``tasks`` section lists the values that differ (``set``: dotted keys, as ``dvc exp run -S`` takes
them) and the experiments to train. ``ecgpipe task run NAME`` runs it as one DVC experiment::

    dvc exp run --temp --name NAME -S 'spectrogram.classes=["N", "A", "O", "~"]' ... \\
        -S '~experiments.conv-chunked' ...

in a temporary copy of the repository (``--queue`` queues it for ``dvc queue start`` instead), so
the workspace keeps the two-class outputs. Its outputs are kept by DVC as the experiment NAME
(``dvc exp show``; ``dvc exp apply NAME`` brings them into the workspace) and its runs go to the
MLflow store of the project, in the MLflow experiment the task names.
"""
from __future__ import annotations

import copy
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ecgpipe.core.errors import ParamsError
from ecgpipe.params import Params, TaskParams, load_params, parse_params


def task_of(params: Params, name: str) -> TaskParams:
    """Task NAME, checked against this file's experiments."""
    try:
        task = params.tasks[name]
    except KeyError:
        raise ParamsError(f"params: tasks.{name}: no such task; known: {sorted(params.tasks)}") from None
    for experiment in task.experiments:
        if experiment not in params.experiments:
            raise ParamsError(f"params: tasks.{name}.experiments: expected experiments of this file "
                              f"({sorted(params.experiments)}), got {experiment!r}")
    return task


def task_raw_params(raw: dict, task: TaskParams) -> dict:
    """The params mapping as the task's run sees it: ``set`` applied, other experiments removed."""
    raw = copy.deepcopy(raw)
    for dotted, value in task.set.items():
        *path, last = dotted.split(".")
        section = raw
        for i, key in enumerate(path):
            if not isinstance(section.get(key), dict):
                raise ParamsError(f"params: tasks: set: {dotted}: {'.'.join(path[:i + 1])} is not a section of "
                                  "params.yaml")
            section = section[key]
        if last not in section:
            raise ParamsError(f"params: tasks: set: {dotted}: no such key in params.yaml")
        section[last] = value
    raw["experiments"] = {k: v for k, v in raw["experiments"].items() if k in task.experiments}
    for key, value in _run_overrides(raw.get("report", {}).get("order", []), task).items():
        if value is None:
            raw.pop(key, None)
        else:
            raw["report"][key.removeprefix("report.")] = value
    return raw


def _run_overrides(order: list[str], task: TaskParams) -> dict[str, Any]:
    """What a task's run changes beyond ``set``: no tasks section (other tasks name experiments the run
    removes) and ``report.order`` (``order`` here) without the removed experiments. None: remove the key."""
    kept = [name for name in order if name in task.experiments]
    return {"tasks": None, **({"report.order": kept} if kept != order and "report.order" not in task.set else {})}


def task_params(params_path: Path, name: str) -> Params:
    """The validated params of task NAME (a bad value fails here, naming the key, before DVC runs)."""
    raw = yaml.safe_load(Path(params_path).read_text())
    workspace = load_params(params_path)
    task = task_of(workspace, name)
    try:
        params = parse_params(task_raw_params(raw, task))
    except ParamsError as exc:
        raise ParamsError(f"{params_path}: task {name}: {exc}") from None
    # a task is a variant run in a temporary copy: the workspace's model and its @champion are not its to move
    if params.report.registered_model == workspace.report.registered_model:
        raise ParamsError(f"{params_path}: tasks.{name}.set: expected report.registered_model, a registered model of "
                          f"the task's own (the workspace's {workspace.report.registered_model!r} is not a task's to "
                          "register), got none")
    return params


def hydra_value(value: Any) -> str:
    """``value`` in the syntax of Hydra's overrides: JSON, except that mapping keys are bare names."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    return json.dumps(value)


def task_command(name: str, params: Params, queue: bool = False) -> list[str]:
    """``dvc exp run`` with the task's ``--set-param`` overrides (values in Hydra's syntax, which
    reads JSON lists and quoted strings)."""
    task = task_of(params, name)
    overrides = []
    for key, value in task.set.items():
        if isinstance(value, dict):  # Hydra merges a mapping into the one there: remove it, then add the task's
            overrides += [f"~{key}", f"+{key}={hydra_value(value)}"]
        else:
            overrides.append(f"{key}={hydra_value(value)}")
    overrides += [f"~experiments.{e}" for e in params.experiments if e not in task.experiments]
    for key, value in _run_overrides(params.report.order, task).items():
        overrides.append(f"~{key}" if value is None else f"{key}={hydra_value(value)}")
    return ["dvc", "exp", "run", "--queue" if queue else "--temp", "--name", name,
            *(arg for o in overrides for arg in ("-S", o))]


def run_task(name: str, params_path: Path = Path("params.yaml"), queue: bool = False) -> list[str]:
    """Check task NAME's params, make sure the MLflow store is outside DVC's temporary copy, and
    run (or queue) it. Returns the command."""
    from ecgpipe.pipeline.study import check_store, dvc_command, dvc_environment, prepare_store
    from ecgpipe.tracking.runs import tracking_uri

    params = load_params(params_path)
    run_params = task_params(params_path, name)
    check_store(tracking_uri())
    prepare_store(tracking_uri(), run_params.mlflow.experiment_name)
    command = task_command(name, params, queue)
    print("$", shlex.join(command), flush=True)
    if subprocess.run(dvc_command(command), env=dvc_environment()).returncode != 0:
        raise ParamsError(f"`{shlex.join(command)}` failed; see its output above")
    return command
