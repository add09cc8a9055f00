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
    env = dict(os.environ, ECGPIPE_ARCHIVE=str(archive_path), DVC_NO_ANALYTICS="1")
    # stage commands call `python`: make it this interpreter, which has ecgpipe installed
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    _run(["git", "init", "-q"], project, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], project, env)

    def repro(*targets):
        out = _run([sys.executable, "-m", "dvc", "repro", *targets], project, env)
        return set(re.findall(r"Running stage '([^']+)'", out))

    def set_param(section, key, value):
        raw = yaml.safe_load((project / "params.yaml").read_text())
        raw[section][key] = value
        (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    return project, repro, set_param, env


def test_repro_caches_and_reruns_only_what_changed(dvc_project):
    project, repro, set_param, env = dvc_project
    assert repro() == {"download", "spectrogram", "split", "balance", "chunk"}
    assert repro() == set()  # everything cached

    set_param("chunk", "size", 6)
    assert repro() == {"chunk"}
    card = yaml.safe_load((project / "metrics" / "chunk.json").read_text())
    assert card["train"]["chunks"]["total"] > 0

    set_param("spectrogram", "noverlap", 8)
    assert repro() == {"spectrogram", "split", "balance", "chunk"}

    # the data card is readable through DVC, as a user would
    shown = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project, env)
    assert '"n_records"' in shown and '"balanced_chunks"' in shown
