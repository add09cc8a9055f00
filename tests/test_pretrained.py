"""The shipped detector on a fresh clone: the README's install, then `ecgpipe predict` with no --model.

Slow (a fresh virtual environment with every locked package): not in the default test run; `.ci/run`
runs it (`pytest -m slow`). It clones this repository's HEAD, so it tests what is committed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("tests/data/cinc2017/A00231.mat", "tests/data/cinc2017/A00026.mat")


def readme_install() -> str:
    """The install part of the README's test command: everything before it runs pytest."""
    text = (ROOT / "README.md").read_text()
    command = next(line for line in text.splitlines()
                   if line.startswith("python3 -m venv .venv") and line.endswith(".venv/bin/python -m pytest -q"))
    return command.removesuffix(" && .venv/bin/python -m pytest -q")


def test_a_fresh_clone_classifies_with_the_shipped_detector_right_after_the_readmes_install(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(["bash", "-c", readme_install()], cwd=clone, env=env, capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([str(clone / ".venv" / "bin" / "ecgpipe"), "predict", *EXAMPLES, "--out", "out.csv"],
                         cwd=clone, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    shipped = json.loads((clone / "pretrained" / "shipped.json").read_text())
    # it names the model it used: the shipped champion, from the clone's own folder
    named = re.search(r"model: (\S+), the shipped (\S+)@champion: (\S+) ", run.stderr)
    assert named and Path(named[1]) == clone / "pretrained" / "model"
    assert (named[2], named[3]) == (shipped["registered_model"], shipped["experiment"])
    # the champion's own scores of these validation recordings (its evaluate stage's table)
    from ecgpipe.pipeline.ship import outputs_root

    source = outputs_root(shipped["task"])
    champion = pd.read_csv(clone / source / "plots" / "confusion" / shipped["experiment"] / "val.csv").set_index("record")
    got = pd.read_csv(clone / "out.csv").set_index("record")
    for record in ("A00231", "A00026"):
        assert got.loc[record, "label"] == champion.loc[record, "predicted"]
        # another CPU's kernels round otherwise: agreement to well within any decision's margin
        assert got.loc[record, "p_A"] == pytest.approx(champion.loc[record, "p_A"], abs=1e-3)
    assert list(got.loc[["A00231", "A00026"], "label"]) == ["A", "N"]
