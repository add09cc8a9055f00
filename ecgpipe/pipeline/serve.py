"""The `task_serve@NAME` stage: what a task's champion serves beyond the task's own registered model."""
from __future__ import annotations

from pathlib import Path

from ecgpipe.core.io import read_json, write_json


def run_serve(serve_as: str | None, task_champion: Path, models_dir: Path, workspace_champion: Path,
              out_path: Path) -> dict:
    """The `task_serve@NAME` stage: with ``serve_as`` set, the task's champion (its report's
    ``champion.json``, which names one only when it passed the task's gate) takes ``@champion`` of
    ``serve_as`` (a new version where the run differs); otherwise the workspace's champion keeps it
    (the notebook's report chose it: ``workspace_champion``). Writes what is served and why."""
    from ecgpipe.tracking.registry import CHAMPION, register_choice

    chosen, workspace = read_json(task_champion), read_json(workspace_champion)
    if serve_as is None:
        served = {"serves": None, "why": "report.serve_as is null: the task registers its own model only"}
    elif chosen.get("experiment") is None:
        served = {"serves": serve_as, "model": workspace.get("model_uri"), "experiment": workspace.get("experiment"),
                  "why": f"the task's champion did not pass its gate ({chosen.get('how')}): the workspace's stays"}
    else:
        registered = register_choice(chosen["experiment"], models_dir, serve_as, CHAMPION,
                                     f"the task's champion passed its gate; {chosen.get('how')}")
        served = {"serves": serve_as, "model": registered["model_uri"], **registered,
                  "why": f"the task's champion passed its gate: {chosen.get('how')}"}
    write_json(out_path, served)
    return served
