"""The `check` stage: the whole ``params.yaml`` validated before DVC runs (and deletes the outputs
of) any other stage.

DVC runs a stage only when something it lists changed, so a typo in a key that no stage reads
(``train.batchsize``) would pass unseen, and a bad value would be found only by the stage that
reads it, after DVC deleted that stage's outputs. This stage depends on the file as a whole and
every other stage depends (through ``download``) on its output, so any edit of ``params.yaml`` is
checked first, and so is every task's params as its stages will read them. Its output is the same
bytes whatever the params, so passing the check reruns nothing downstream.
"""
from __future__ import annotations

from pathlib import Path

from ecgpipe.core.errors import fail_param
from ecgpipe.core.io import write_json
from ecgpipe.params import Params
from ecgpipe.pipeline.task import task_params

# the output's content: fixed, so that a new valid params.yaml changes no downstream dependency
CHECKED = {"params": "valid: every key known, every value in range"}


def run_check(params: Params, params_path: Path, out_path: Path) -> None:
    """Record that ``params.yaml`` passed: the stage's loader (``ecgpipe.pipeline.stage.run_stage``) has
    validated the whole file before this runs; each task's params are validated here."""
    if params.ensembles:  # the workspace's stages make none: a section here would change nothing
        fail_param("ensembles", "none in this file: the tasks make the rhythm ensembles of task_ensembles "
                   "(a task's own params get them as ensembles)", sorted(params.ensembles))
    for name in params.tasks:
        task_params(params_path, name)
    write_json(out_path, CHECKED)
