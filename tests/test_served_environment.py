"""The served model in an environment built from its own requirements, without ecgpipe installed.

Then `mlflow models serve --env-manager virtualenv` builds the model's environment itself and
serves from it, and gets the README's request (MLflow's virtualenv manager needs pyenv and the
`virtualenv` package, a locked test dependency). Slow (a fresh virtual environment with torch and MLflow): not in the default test run; `.ci/run`
runs it (`pytest -m slow`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import scipy.io

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


@pytest.fixture(scope="module")
def clean_python(evaluated, tmp_path_factory) -> tuple[str, dict, object]:
    """A fresh virtual environment with only the predictor's requirements: python, env, a folder to run in."""
    folder = evaluated["out"] / "predictors" / evaluated["name"]
    root = tmp_path_factory.mktemp("clean")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", str(folder / "requirements.txt")], check=True, env=env)
    return python, env, root


def test_the_ensemble_loads_and_scores_in_a_clean_environment_from_its_own_requirements(ensemble, clean_python,
                                                                                         records_dir, evaluated):
    from ecgpipe.ensemble.model import RhythmEnsemble

    python, env, cwd = clean_python
    folder = ensemble["predictor"]
    predictor = evaluated["out"] / "predictors" / evaluated["name"]
    # the same pinned packages as the network's own served model; MLflow itself depends on scikit-learn,
    # so the trees' independence of it is shown by scoring with every import of it made to fail
    assert (folder / "requirements.txt").read_text() == (predictor / "requirements.txt").read_text()
    without_sklearn = "import sys\nsys.modules['sklearn'] = None  # any import of it now raises\n" + SCORE
    files = [str(records_dir / f"A0000{i}.mat") for i in (1, 2, 3)]
    run = subprocess.run([python, "-c", without_sklearn, str(folder), *files], env=env, capture_output=True,
                         text=True, cwd=cwd)
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    expected = [RhythmEnsemble.from_folder(folder).classify(read_recording(f)) for f in files]
    assert [r["label"] for r in served] == [e["label"] for e in expected] and all(r["error"] == "" for r in served)
    np.testing.assert_allclose([r["p_A"] for r in served], [e["p_A"] for e in expected], atol=1e-6)


def test_the_predictor_loads_and_scores_in_a_clean_environment_from_its_own_requirements(evaluated, records_dir,
                                                                                          tmp_path, clean_python):
    folder = evaluated["out"] / "predictors" / evaluated["name"]
    requirements = (folder / "requirements.txt").read_text().split()
    # pinned to the versions it was trained with; torch by its version, not its build
    assert all("==" in r for r in requirements) and any(r.startswith("torch==") for r in requirements)
    assert not any("+" in r for r in requirements)
    shipped = {str(p.relative_to(folder / "code")) for p in (folder / "code").rglob("*.py")}
    assert "ecgpipe/inference/predictor.py" in shipped and "ecgpipe/tracking/pyfunc.py" in shipped
    assert not [p for p in shipped if p.startswith(("ecgpipe/training", "ecgpipe/pipeline", "ecgpipe/bench",
                                                    "ecgpipe/cli", "ecgpipe/reporting"))]

    python, env, _ = clean_python
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

    # `mlflow models serve --env-manager virtualenv`: MLflow builds the model's own environment (pyenv's
    # Python of python_env.yaml, then requirements.txt) and serves from it; the README's request, and
    # the serving contract
    from ecgpipe.tracking.server import free_port
    from tests.test_serving import _strict_json

    pyenv = shutil.which("pyenv") or os.path.expanduser("~/.pyenv/bin/pyenv")
    assert os.access(pyenv, os.X_OK), "MLflow's virtualenv manager needs pyenv"
    port = free_port()
    mlflow_cli = shutil.which("mlflow", path=os.path.dirname(sys.executable))
    server = subprocess.Popen([mlflow_cli, "models", "serve", "-m", str(folder), "--env-manager", "virtualenv",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=dict(env, MLFLOW_ENV_ROOT=str(tmp_path / "envs"),
                                       PATH=os.pathsep.join([os.path.dirname(sys.executable), os.path.dirname(pyenv),
                                                             env["PATH"]])),
                              cwd=tmp_path, stdout=open(tmp_path / "server.log", "wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        signal = scipy.io.loadmat(records_dir / "A00004.mat")["val"][0].astype(float).tolist()
        body = json.dumps({"dataframe_records": [{"signal": signal, "fs": 300}]}).encode()
        deadline = time.monotonic() + 600  # the environment is built first
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = _strict_json(response.read())["predictions"][0]
                break
            except (ConnectionError, urllib.error.URLError):
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the model server did not start within 600 s"
                time.sleep(1)
        expected = Predictor.from_folder(folder).classify(read_recording(records_dir / "A00004.mat"))
        assert answer["label"] == expected["label"] and answer["error"] == ""
        assert abs(answer["p_A"] - expected["p_A"]) < 1e-6
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=b"x",
                                         headers={"Content-Type": "text/csv"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 415 and b"Traceback" not in refused.value.read()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
