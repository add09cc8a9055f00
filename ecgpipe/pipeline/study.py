"""Cross-validation studies: one queued DVC experiment per fold and seed, run by DVC's own queue
workers, then aggregated across folds from MLflow.

A study named NAME queues, for every fold k and seed s, ``dvc exp run --queue -S split.fold=k
-S train.seed=s -S study.name=NAME evaluate@EXPERIMENT ...`` (for a task of params.yaml's
``tasks``, ``task_evaluate@TASK-EXPERIMENT``) and starts ``dvc queue start -j JOBS``. Each train
stage tags its MLflow run with ``study``, ``fold`` and ``seed``.

The report reads the runs back from MLflow rather than from ``dvc exp show``: MLflow holds every
worker's runs in one store, with their tags and artifacts, whether or not the experiments' git
refs are kept, and the study's parent run belongs beside them. For every experiment it gives the
mean, standard deviation and a t-interval across folds of each recording-level figure, and for
every pair of experiments the mean paired difference across folds (each fold's validation
recordings are the same for both) with its t-interval.
"""
from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ecgpipe.core.errors import StudyError
from ecgpipe.params import ENSEMBLE_SUFFIX
from ecgpipe.reporting.study import check_study_name


def evaluate_stage(experiment: str, task: str | None = None) -> str:
    """dvc.yaml's stage that evaluates ``experiment``: the notebook's task's, or task ``task``'s (a
    rhythm ensemble's, NETWORK+rhythm: ``task_ensemble_evaluate@TASK-NETWORK``)."""
    if task is None:
        return f"evaluate@{experiment}"
    if experiment.endswith(ENSEMBLE_SUFFIX):
        return f"task_ensemble_evaluate@{task}-{experiment.removesuffix(ENSEMBLE_SUFFIX)}"
    return f"task_evaluate@{task}-{experiment}"


def queue_commands(name: str, folds: int, seeds: list[int], experiments: list[str],
                   task: str | None = None, overrides: tuple[str, ...] = ()) -> list[list[str]]:
    """The ``dvc exp run --queue`` commands of a study: one per fold and seed. With ``task``, of that
    task's stages (its params file takes split, train and study from params.yaml's). ``overrides``
    (``KEY=VALUE`` of params.yaml) are set in every one: a candidate recipe's study."""
    targets = [evaluate_stage(e, task) for e in experiments]
    settings = [arg for override in overrides for arg in ("-S", override)]
    return [["dvc", "exp", "run", "--queue", "--name", f"{name}-fold{fold}-seed{seed}",
             "-S", f"split.folds={folds}", "-S", f"split.fold={fold}", "-S", f"train.seed={seed}",
             "-S", f"study.name={name}", *settings, *targets]
            for seed, fold in itertools.product(seeds, range(folds))]


def with_overrides(raw: dict, overrides: tuple[str, ...], source: str) -> dict:
    """params.yaml's mapping ``raw`` with each ``KEY=VALUE`` of ``overrides`` set (VALUE read as YAML,
    as `dvc exp run -S` reads it); KEY must name a value params.yaml has, or, written ``+KEY`` (DVC's
    way to add one), a value it does not have yet."""
    import copy

    import yaml

    from ecgpipe.pipeline.task import DottedKeyError, set_dotted

    raw = copy.deepcopy(raw)
    for override in overrides:
        dotted, _, text = override.partition("=")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:  # e.g. an unclosed list: one line, not the parser's traceback
            raise StudyError(f"--set {override}: expected a YAML value after '=', as DVC's -S reads it, got "
                             f"{text!r} ({error.problem or error})") from None
        add = dotted.startswith("+")
        try:
            set_dotted(raw, dotted.removeprefix("+"), value, add)
        except DottedKeyError as error:
            raise StudyError(
                f"--set {override}: {error.not_a_section} is not a section of {source}" if error.not_a_section
                else f"--set {override}: {source} already has {dotted[1:]}; drop the '+' to change it" if add
                else f"--set {override}: {source} has no {dotted}; expected a key it has (+{dotted}=... adds one, "
                     "as DVC's -S does)") from None
    return raw


def study_params(params_path: str | Path, task: str | None = None, overrides: tuple[str, ...] = ()):
    """The params a study's runs see: ``params_path``'s, or with ``task`` that task's; with
    ``overrides`` (``--set``), as they change them (a bad one fails here, before anything is queued)."""
    import tempfile

    import yaml

    from ecgpipe.core.errors import ParamsError
    from ecgpipe.params import load_params
    from ecgpipe.pipeline.task import task_params

    if not overrides:
        return load_params(params_path) if task is None else task_params(params_path, task)
    raw = with_overrides(yaml.safe_load(Path(params_path).read_text()), overrides, str(params_path))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(params_path).name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            return load_params(path) if task is None else task_params(path, task)
        except ParamsError as exc:  # name the user's file and values, not the copy they were checked in
            raise ParamsError(str(exc).replace(str(path), f"{params_path} with --set {' '.join(overrides)}")) from None


def record_settings(uri: str, experiment_name: str, name: str, overrides: tuple[str, ...]) -> None:
    """Record the study's ``overrides`` on its parent MLflow run (made here if new), for its report's
    provenance. A study queued again must keep them: one study's runs share one recipe."""
    from mlflow.tracking import MlflowClient

    from ecgpipe.reporting.study import new_study_parent, parent_settings, study_parent

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment_name).experiment_id
    parent = study_parent(client, experiment_id, name)
    if parent is not None:
        before = parent_settings(parent)
        if before != list(overrides):
            raise StudyError(f"study {name} was queued with --set {' '.join(before) or '(none)'}; its runs must share "
                             f"one recipe, so --set {' '.join(overrides) or '(none)'} needs a study of its own "
                             "(another --name)")
        return
    new_study_parent(client, experiment_id, name, overrides)


def check_store(uri: str) -> None:
    """Queued experiments run in temporary copies: a store given by a relative path would be
    created inside each copy and deleted with it."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        raise StudyError(f"MLFLOW_TRACKING_URI={uri}: a relative SQLite path would land in each queued "
                         "experiment's temporary copy; give an absolute path")


def prepare_store(uri: str, experiment_name: str) -> None:
    """Create the store's tables and the experiment before the workers start: two workers that
    find a new SQLite store both run its schema migrations, and one of them fails."""
    import mlflow

    from ecgpipe.tracking.runs import check_store_file, experiment_id

    check_store_file(uri)
    mlflow.set_tracking_uri(uri)
    experiment_id(mlflow, experiment_name)


def dvc_environment() -> dict[str, str]:
    """The environment for DVC commands: this interpreter's folder first on PATH, so that the
    stages' ``python stages/...`` is the interpreter that runs ecgpipe, also when it was called as
    ``.venv/bin/ecgpipe`` without activating the environment (as cron jobs do)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    return env


def worker_environment(jobs: int) -> dict[str, str]:
    """The environment the queue workers inherit (:func:`dvc_environment`): with several workers,
    each trains on its share of the cores (PyTorch would give each of them all cores, and the
    threads would fight for them). float32 results do not depend on the thread count, bfloat16 ones
    do (docs/reproducibility.md)."""
    env = dvc_environment()
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def run_study(name: str, folds: int, seeds: list[int], experiments: list[str], jobs: int, experiment_name: str,
              wait: bool = False, poll_s: float = 2.0, task: str | None = None,
              overrides: tuple[str, ...] = ()) -> list[list[str]]:
    """Queue the study's experiments and start ``jobs`` queue workers; with ``wait``, return only
    when the queue is empty. Returns the commands it ran."""
    from ecgpipe.tracking.runs import tracking_uri

    check_study_name(name)
    check_store(tracking_uri())
    prepare_store(tracking_uri(), experiment_name)
    if folds < 2 or jobs < 1:
        raise StudyError(f"a study needs at least 2 folds and 1 worker, got {folds} folds and {jobs} workers")
    record_settings(tracking_uri(), experiment_name, name, overrides)
    queued = queue_commands(name, folds, seeds, experiments, task, overrides)
    commands = [*queued, ["dvc", "queue", "start", "-j", str(jobs)]]
    env = worker_environment(jobs)
    failed_before = {task for task, _, status in _queue_rows() or [] if status == "Failed"}
    for command in commands:
        print("$", shlex.join(command), flush=True)
        if subprocess.run(dvc_command(command), env=env).returncode != 0:
            raise StudyError(f"`{shlex.join(command)}` failed; see its output above")
    if wait:
        started = time.monotonic()
        while _queue_busy():
            time.sleep(poll_interval(time.monotonic() - started, poll_s))
        names = {command[command.index("--name") + 1] for command in queued}
        failed = sorted(n for task, n, status in _queue_rows() or []
                        if status == "Failed" and n in names and task not in failed_before)
        if failed:
            raise StudyError(f"{len(failed)} of {len(names)} runs of study {name} failed: {', '.join(failed)}; "
                             f"`dvc queue logs {failed[0]}` says why")
    return commands


def poll_interval(elapsed_s: float, least_s: float, most_s: float = 60.0) -> float:
    """Seconds until the next look at the queue, a twentieth of the time waited so far: each look is a
    DVC process (about a second of CPU), which every 5 s took a tenth of a 2-core machine from a
    study of hours; a short study is still seen to end within seconds."""
    return min(most_s, max(least_s, elapsed_s / 20))


def dvc_command(command: list[str]) -> list[str]:
    """A ``dvc ...`` command run by this interpreter's DVC, whatever is on PATH."""
    return [sys.executable, "-m", *command] if command[0] == "dvc" else command


def _queue_rows() -> list[tuple[str, str, str]] | None:
    """``dvc queue status`` as (task, name, status) rows; None while it cannot answer (e.g. while
    a worker holds the queue's lock)."""
    result = subprocess.run(dvc_command(["dvc", "queue", "status"]), capture_output=True, text=True,
                            env=dvc_environment())
    if result.returncode != 0:
        return None
    # "Task  Name  Created  Status" rows: the task and name first, the status is the last word
    return [(words[0], words[1], words[-1]) for words in map(str.split, result.stdout.splitlines()[1:])
            if len(words) >= 3]


def _queue_busy() -> bool:
    rows = _queue_rows()
    return rows is None or any(status in ("Queued", "Running") for _, _, status in rows)
