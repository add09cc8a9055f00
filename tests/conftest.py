import copy
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from ecgpipe.pipeline.evaluate import run_evaluate
from ecgpipe.pipeline.train import TrainSections, run_train
from tests.synthetic import default_set, make_records, zip_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory) -> Path:
    """An extracted synthetic records folder (48 records, all four classes)."""
    directory = tmp_path_factory.mktemp("synthetic") / "records"
    make_records(directory, *default_set())
    return directory


@pytest.fixture(scope="session")
def archive_path(records_dir, tmp_path_factory) -> Path:
    return zip_records(records_dir, tmp_path_factory.mktemp("archive") / "training2017.zip")


def empty_store(path: Path) -> str:
    """The sqlite URI of a new MLflow store at ``path``, made as the project's writers make one
    (``check_store_file``: a copy of a store migrated once per MLflow version), not by a bare
    ``MlflowClient``, whose schema migrations cost each hand-built store about 2 s of CPU."""
    from ecgpipe.tracking.runs import check_store_file

    uri = f"sqlite:///{path}"
    check_store_file(uri)
    return uri


def cli_exit_message(argv: list[str]) -> str:
    """What `ecgpipe ARGV...` exits with (the error line), for a call that must fail."""
    from ecgpipe.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return str(exit_info.value.code)


def small_params_dict() -> dict:
    """The project's params.yaml, scaled to the synthetic recordings, with two tiny experiments."""
    raw = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["spectrogram"].update(min_length=1000, max_length=3000, batch_size=7)
    raw["chunk"]["size"] = 8
    raw["train"].update(batch_size=16, eval_batch_size=64)
    # two of the project's device shifts and fewer resamples: tests that look at all of them set them
    raw["evaluate"].update(bootstrap_resamples=200, shifts={
        k: v for k, v in raw["evaluate"]["shifts"].items() if k in ("gain_2x", "resample_360hz")})
    raw["experiments"] = {
        "mean_spectrum-chunked": {"model": "mean_spectrum", "loader": "chunked", "epochs": 3, "lr": 0.01, "lr_schedule": "constant"},
        "fully_connected-random_chunk": {"model": "fully_connected", "loader": "random_chunk", "epochs": 2, "lr": 0.01, "lr_schedule": "cosine"},
    }
    # report.order and the tasks name the project's experiments, which must be in the file
    raw["report"]["order"] = []
    raw["tasks"], raw["task_experiments"], raw["task_ensembles"] = {}, [], {}
    return raw


@pytest.fixture
def small_params() -> dict:
    return small_params_dict()


def train(params, name: str, data: dict, out: Path, **options) -> dict:
    """Experiment ``name`` of ``params`` trained as its stage runs it, into the project's layout under
    ``out`` (models/, metrics/, plots/); ``data``: the data stages' outputs (``spectrogram``,
    ``signals``, ``balance``, ``chunks``). Returns the stage's summary."""
    return run_train(TrainSections.of(params, name), data["spectrogram"], data["signals"], data["balance"],
                     data["chunks"], out / "models" / name, out / "metrics" / name / "train.json",
                     out / "plots" / "history" / f"{name}.csv", out / "metrics" / name / "speed.json",
                     **{"system_metrics": False, **options})


def train_and_evaluate(params, name: str, data: dict, records_dir: Path, out: Path) -> dict:
    """``train``, then the evaluate stage on ``records_dir`` (predictors/ too); returns its summary."""
    train(params, name, data, out)
    return run_evaluate(params.evaluate, params.train, params.chunk, name, records_dir, data["spectrogram"],
                        data["chunks"], out / "models" / name, out / "metrics" / name / "eval.json", out / "plots",
                        out / "predictors" / name)


@pytest.fixture(scope="session")
def prepared(records_dir, tmp_path_factory) -> dict:
    """The data stages run on the synthetic records: paths of their outputs, and the params."""
    from ecgpipe.params import parse_params
    from ecgpipe.pipeline.balance import run_balance
    from ecgpipe.pipeline.chunk import run_chunk
    from ecgpipe.pipeline.signals import run_signals
    from ecgpipe.pipeline.spectrogram import run_spectrogram
    from ecgpipe.pipeline.split import run_split

    params = parse_params(small_params_dict())
    out = tmp_path_factory.mktemp("prepared")
    paths = {"spectrogram": out / "spectrogram", "split": out / "split.json", "balance": out / "balance.json",
             "chunks": out / "chunks", "signals": out / "signals.pt"}
    run_spectrogram(params.spectrogram, records_dir, paths["spectrogram"], out / "metrics" / "spectrogram.json")
    run_signals(records_dir, paths["spectrogram"], paths["signals"])
    run_split(params.split, paths["spectrogram"], paths["split"])
    run_balance(params.balance, paths["spectrogram"], paths["split"], paths["balance"])
    run_chunk(params.chunk, paths["spectrogram"], paths["split"], paths["balance"], paths["chunks"],
              out / "metrics" / "chunk.json")
    return {"params": params, **paths}


def copy_project(tmp_path: Path, params: dict, archive_path: Path) -> tuple[Path, dict]:
    """The project's code, stages and dvc.yaml with ``params`` in a new folder, and an environment
    for its DVC commands (the synthetic archive; `python` is this interpreter, which has ecgpipe)."""
    import os
    import shutil
    import sys

    project = tmp_path / "project"
    project.mkdir()
    for name in ("ecgpipe", "stages"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project)
    (project / "tasks").mkdir()  # the ship stage depends on every task's outputs, so on the folder
    shutil.copy(ROOT / "tasks" / "README.md", project / "tasks")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, ECGPIPE_ARCHIVE=str(archive_path), DVC_NO_ANALYTICS="1")
    # Python caches bytecode as on a user's machine (this one's environment turns that off): each stage
    # process then compiles ecgpipe once per project, not every time, and .dvcignore is put to the test
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    return project, env


@pytest.fixture
def committed_project(tmp_path, archive_path):
    """``make(params)``: the project in a temporary git repository, committed, with the default
    MLflow store (mlflow.db at its root), as DVC experiments need it. Returns (project, run), where
    ``run(*args)`` runs a command there and returns its output (failing the test if it fails)."""
    import os
    import subprocess

    def make(params: dict):
        project, env = copy_project(tmp_path, params, archive_path)
        for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):  # the default store: mlflow.db at the project root
            env.pop(name, None)
        env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")

        def run(*args):
            call_env = env
            if args[0] == "ecgpipe":  # as cron calls it: the environment's own binary, not activated
                venv_bin = os.path.dirname(sys.executable)
                args = (os.path.join(venv_bin, "ecgpipe"), *args[1:])
                call_env = dict(env, PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin))
            result = subprocess.run(args, cwd=project, env=call_env, capture_output=True, text=True)
            assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
            return result.stdout

        run("git", "init", "-q")
        run(sys.executable, "-m", "dvc", "init", "-q")
        (project / ".gitignore").write_text("/data/\n/models/\n/predictors/\n/mlflow.db\n/mlartifacts/\n")
        run("git", "add", "-A")
        run("git", "commit", "-qm", "project")
        return project, run

    return make


@pytest.fixture(scope="session")
def evaluated_once(prepared, records_dir, tmp_path_factory):
    """A tiny model trained and evaluated on the synthetic pipeline, in its own MLflow store: once per
    test process (each module gets a copy, see ``evaluated``)."""
    out = tmp_path_factory.mktemp("evaluated-once")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{out / 'mlflow.db'}"
    try:
        name = "mean_spectrum-chunked"
        summary = train_and_evaluate(prepared["params"], name, prepared, records_dir, out)
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return {"out": out, "name": name, "summary": summary}


@pytest.fixture(scope="module")  # module: it sets MLFLOW_TRACKING_URI while the module runs
def evaluated(evaluated_once, tmp_path_factory):
    """``evaluated_once``'s folder copied for this module, with a store of its own (what one module
    registers or promotes, another never sees); MLFLOW_TRACKING_URI points at it while the module runs."""
    import shutil

    from mlflow.tracking import MlflowClient

    name = evaluated_once["name"]
    out = tmp_path_factory.mktemp("evaluated") / "out"
    shutil.copytree(evaluated_once["out"], out)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    run_file = out / "models" / name / "mlflow_run.json"
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "tracking_uri": uri}))
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        trained = MlflowClient(uri).get_run(json.loads(run_file.read_text())["run_id"]).info
        yield {"out": out, "name": name, "summary": evaluated_once["summary"], "uri": uri, "trained": trained}
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="module")
def ensemble(evaluated, prepared, records_dir, tmp_path_factory):
    """The evaluated network's rhythm ensemble, made by its two stages as `dvc repro` runs them (the
    features stage first), into the evaluated network's project layout and MLflow store."""
    from ecgpipe.params import parse_params
    from ecgpipe.pipeline.ensemble import run_ensemble_evaluate, run_ensemble_train
    from ecgpipe.pipeline.features import run_features

    network, out = evaluated["name"], evaluated["out"]
    raw = small_params_dict()
    raw["ensembles"] = {network: {"network_weight": 0.5, "seed": 0}}
    params = parse_params(raw)
    name = f"{network}+rhythm"
    features = out / "features.csv"
    run_features(records_dir, features)
    trained = run_ensemble_train(params, network, records_dir, features, prepared["spectrogram"], prepared["split"],
                                 out / "predictors" / network, out / "models" / name,
                                 out / "metrics" / name / "train.json")
    summary = run_ensemble_evaluate(params, network, records_dir, features, prepared["spectrogram"],
                                    prepared["split"], out / "models" / name, out / "metrics" / name / "eval.json",
                                    out / "plots", out / "predictors" / name)
    return {"name": name, "network": network, "out": out, "params": params, "features": features, "prepared": prepared,
            "trained": trained, "summary": summary, "predictor": out / "predictors" / name,
            "run_id": json.loads((out / "models" / name / "mlflow_run.json").read_text())["run_id"]}


# The longest files first (their seconds on 2 cores, from --durations): with --dist loadfile and
# --no-loadscope-reorder (pyproject.toml), xdist hands files to its workers in collection order, so these
# start at once and the short ones fill in behind. Without that flag xdist sorts files by their number of
# tests, which sent the two-test DVC file out among the last, and one worker idled for the last 40 s.
LONGEST_FIRST = ("test_dvc_pipeline.py", "test_study.py", "test_task.py", "test_report.py", "test_bench.py",
                 "test_serving.py", "test_bad_input_round3.py", "test_tracking.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order
