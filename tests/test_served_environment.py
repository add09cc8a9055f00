"""The served model in an environment built from its own requirements, without ecgpipe installed.

Slow (a fresh virtual environment with torch and MLflow): not in the default test run; `.ci/run`
runs it (`pytest -m slow`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ecgpipe.inference.predictor import Predictor
from ecgpipe.inference.readers import read_recording

pytestmark = pytest.mark.slow

SCORE = """
import json, sys
import numpy as np, pandas as pd, scipy.io
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
signals = [scipy.io.loadmat(path)["val"][0].astype(float).tolist() for path in sys.argv[2:]]
out = model.predict(pd.DataFrame({"signal": signals, "fs": [300.0] * len(signals)}))
print(json.dumps(out.to_dict(orient="records")))
"""


def test_the_predictor_loads_and_scores_in_a_clean_environment_from_its_own_requirements(evaluated, records_dir,
                                                                                          tmp_path):
    folder = evaluated["out"] / "predictors" / evaluated["name"]
    requirements = (folder / "requirements.txt").read_text().split()
    # pinned to the versions it was trained with; torch by its version, not its build
    assert all("==" in r for r in requirements) and any(r.startswith("torch==") for r in requirements)
    assert not any("+" in r for r in requirements)
    shipped = {str(p.relative_to(folder / "code")) for p in (folder / "code").rglob("*.py")}
    assert "ecgpipe/inference/predictor.py" in shipped and "ecgpipe/tracking/pyfunc.py" in shipped
    assert not [p for p in shipped if p.startswith(("ecgpipe/training", "ecgpipe/pipeline", "ecgpipe/bench",
                                                    "ecgpipe/cli", "ecgpipe/reporting"))]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", str(folder / "requirements.txt")], check=True, env=env)
    assert subprocess.run([python, "-c", "import ecgpipe"], env=env, capture_output=True, cwd=tmp_path).returncode != 0
    files = [str(records_dir / f"A0000{i}.mat") for i in (1, 2, 3)]
    run = subprocess.run([python, "-c", SCORE, str(folder), *files], env=env, capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    expected = [Predictor.from_folder(folder).classify(read_recording(f)) for f in files]
    assert [r["label"] for r in served] == [e["label"] for e in expected]
    assert all(r["error"] == "" for r in served)
    np.testing.assert_allclose([r["p_A"] for r in served], [e["p_A"] for e in expected], atol=1e-6)
