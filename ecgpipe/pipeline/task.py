"""Tasks: named variants of the whole pipeline (such as the four-class CinC task), each a family of
stages in dvc.yaml beside the notebook's own.

``params.yaml`` describes the notebook's two-class task. A task in its ``tasks`` section lists the
values that differ (``set``: dotted keys); ``task_experiments`` lists what every task trains. For
task NAME, dvc.yaml's ``task_spectrogram@NAME`` ... ``task_report@NAME`` run the stage scripts with
``--task NAME``, which read the params as :func:`task_params` makes them, into ``data/tasks/NAME``,
``models/tasks/NAME`` ... ``reports/tasks/NAME``. Each stage depends on the task's ``set`` and on the
sections it reads, so changing one task's values reruns only that task's stages, and ``dvc repro``,
``dvc exp show``, ``dvc plots`` and the MLflow UI (the task's own MLflow experiment) show the tasks
beside the notebook's experiments.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from ecgpipe.core.errors import ParamsError
from ecgpipe.core.io import atomic_path
from ecgpipe.params import Params, TaskParams, load_params, parse_params


def task_of(params: Params, name: str) -> TaskParams:
    """Task NAME of this params file."""
    try:
        return params.tasks[name]
    except KeyError:
        raise ParamsError(f"params: tasks.{name}: no such task; known: {sorted(params.tasks)}") from None


class DottedKeyError(KeyError):
    """``set_dotted``'s key is not in the mapping: ``not_a_section`` names the part of it that is not a
    section, or is None when only its last name is missing."""

    def __init__(self, dotted: str, not_a_section: str | None):
        super().__init__(dotted)
        self.not_a_section = not_a_section


def set_dotted(raw: dict, dotted: str, value, add: bool = False) -> None:
    """``raw["a"]["b"]["c"] = value`` for ``dotted`` "a.b.c", where that key already exists (a task's
    ``set`` and ``ecgpipe study run --set`` change params.yaml's values); with ``add``, where it does
    not yet (DVC's ``-S +a.b.c=value``: a key the params file leaves at its default)."""
    *path, last = dotted.split(".")
    section = raw
    for i, key in enumerate(path):
        if not isinstance(section.get(key), dict):
            raise DottedKeyError(dotted, ".".join(path[:i + 1]))
        section = section[key]
    if (last in section) == add:
        raise DottedKeyError(dotted, None)
    section[last] = value


def task_raw_params(raw: dict, task: TaskParams) -> dict:
    """The params mapping as the task's stages see it: ``set`` applied, only ``task_experiments``
    kept (``report.order`` too), ``task_ensembles`` as its ensembles, and no tasks."""
    raw = copy.deepcopy(raw)
    for dotted, value in task.set.items():
        try:
            set_dotted(raw, dotted, value)
        except DottedKeyError as error:
            raise ParamsError(f"params: tasks: set: {dotted}: {error.not_a_section} is not a section of params.yaml"
                              if error.not_a_section else f"params: tasks: set: {dotted}: no such key in params.yaml")
    kept = raw.pop("task_experiments", [])
    raw.pop("tasks", None)
    raw["experiments"] = {k: v for k, v in raw["experiments"].items() if k in kept}
    raw["ensembles"] = raw.pop("task_ensembles", {})
    report = raw.get("report", {})
    if "order" in report and "report.order" not in task.set:
        report["order"] = [name for name in report["order"] if name in kept]
    return raw


def task_params(params_path: Path, name: str) -> Params:
    """The validated params of task NAME (a bad value fails here, naming the key)."""
    raw = yaml.safe_load(Path(params_path).read_text())
    workspace = load_params(params_path)
    task = task_of(workspace, name)
    try:
        params = parse_params(task_raw_params(raw, task))
    except ParamsError as exc:
        raise ParamsError(f"{params_path}: task {name}: {exc}") from None
    # the workspace's registered model is the notebook's report's to move
    if params.report.registered_model == workspace.report.registered_model:
        raise ParamsError(f"{params_path}: tasks.{name}.set: expected report.registered_model, a registered model of "
                          f"the task's own (the workspace's {workspace.report.registered_model!r} is not a task's to "
                          "register), got none")
    return params


def write_task_params(params_path: Path, name: str, out_path: Path) -> None:
    """The `task_params@NAME` stage: task NAME's params, validated, as a params file of its own (what
    its stages read; DVC compares the keys each of them lists)."""
    task_params(params_path, name)  # a bad value stops here, naming the key
    raw = task_raw_params(yaml.safe_load(Path(params_path).read_text()), task_of(load_params(params_path), name))
    header = f"# task {name}: {params_path} with tasks.{name}.set applied (written by dvc.yaml's task_params@{name})\n"
    with atomic_path(out_path) as tmp:
        tmp.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))

