"""MLflow tracking: where runs go, what each run records, and its system metrics."""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

TRACKING_ENV = "MLFLOW_TRACKING_URI"


def project_root() -> Path:
    """The DVC project root: DVC sets DVC_ROOT for stage commands, also for queued experiments,
    whose commands run in a temporary copy; outside DVC, the current directory."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI when set, else the project's SQLite store (an absolute path)."""
    return os.environ.get(TRACKING_ENV) or f"sqlite:///{project_root() / 'mlflow.db'}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their string form."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_tags(device: torch.device) -> dict[str, str]:
    tags = {"torch_version": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        tags["gpu_name"] = torch.cuda.get_device_name(device)
    if commit := git_commit(project_root()):
        tags["git_commit"] = commit
    if stage := os.environ.get("DVC_STAGE"):
        tags["dvc_stage"] = stage
    return tags


def _experiment_id(mlflow, name: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    kwargs = {}
    if not os.environ.get(TRACKING_ENV):
        # beside the default SQLite store, not wherever the first run happened to start
        kwargs["artifact_location"] = (project_root() / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, **kwargs)


@contextlib.contextmanager
def start_run(experiment_name: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
              system_metrics: bool = True) -> Iterator[Any]:
    """An MLflow run with params and tags; it ends FAILED if the block raises, else FINISHED."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment_id = _experiment_id(mlflow, experiment_name)
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(5)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, log_system_metrics=system_metrics) as run:
        mlflow.log_params(flatten(params))
        mlflow.set_tags(dict(tags))
        yield run
