"""`dvc repro` of the project's own dvc.yaml on a synthetic archive, in a temporary git repo."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def dvc_project(tmp_path, archive_path, small_params):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("ecgpipe", "stages"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", project)
    (project / "params.yaml").write_text(yaml.safe_dump(small_params, sort_keys=False))
    env = dict(os.environ, ECGPIPE_ARCHIVE=str(archive_path), DVC_NO_ANALYTICS="1",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # stage commands call `python`: make it this interpreter, which has ecgpipe installed
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    _run(["git", "init", "-q"], project, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], project, env)

    def repro(*targets):
        out = _run([sys.executable, "-m", "dvc", "repro", *targets], project, env)
        return set(re.findall(r"Running stage '([^']+)'", out))

    def set_param(*path_and_value):
        *path, value = path_and_value
        raw = yaml.safe_load((project / "params.yaml").read_text())
        section = raw
        for key in path[:-1]:
            section = section[key]
        section[path[-1]] = value
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    return project, repro, set_param, env


DATA_STAGES = {"download", "spectrogram", "split", "balance", "chunk"}
TRAIN_STAGES = {"train@mean_spectrum-chunked", "train@fully_connected-random_chunk"}


def test_repro_caches_and_reruns_only_what_changed(dvc_project):
    project, repro, set_param, env = dvc_project
    assert repro() == DATA_STAGES | TRAIN_STAGES
    assert repro() == set()  # everything cached

    # one experiment's epochs: that experiment alone
    set_param("experiments", "mean_spectrum-chunked", "epochs", 1)
    assert repro() == {"train@mean_spectrum-chunked"}
    history = (project / "metrics" / "mean_spectrum-chunked" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header and one epoch

    # the chunk size: chunk (and, through it, training), not spectrogram, split or balance
    set_param("chunk", "size", 6)
    assert repro("chunk") == {"chunk"}
    card = yaml.safe_load((project / "metrics" / "chunk.json").read_text())
    assert card["train"]["chunks"]["total"] > 0

    # a spectrogram parameter: spectrogram and everything after it
    set_param("spectrogram", "noverlap", 8)
    assert repro("chunk") == {"spectrogram", "split", "balance", "chunk"}

    # the data card and training metrics are readable through DVC, as a user would
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project, env)
    assert '"n_records"' in shown and '"balanced_chunks"' in shown and '"val_balanced_acc"' in shown
