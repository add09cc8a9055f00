"""`dvc repro` of the project's own dvc.yaml on a synthetic archive, in a temporary git repo."""
import json
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import copy_project


def _status(project) -> dict:
    """What `dvc status --json` prints: the stages that would rerun, with what changed. DVC's own
    `Repo.status` in this process (the command's code), not a new process that imports DVC each time."""
    from contextlib import chdir

    from dvc.repo import Repo

    with chdir(project), Repo() as repo:  # stages are named relative to the working directory
        return repo.status()


def _run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def dvc_project(tmp_path, archive_path, small_params):
    # two tiny plain networks, which the project's robustness gate would refuse: no gate here (the gate
    # is tested in test_champion.py and, with the project's gate, in test_report.py)
    small_params["report"]["gate"] = {}
    project, env = copy_project(tmp_path, small_params, archive_path)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
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


DATA_STAGES = {"check", "download", "spectrogram", "signals", "features", "split", "balance", "chunk"}
EXPERIMENTS = ("mean_spectrum-chunked", "fully_connected-random_chunk")
TRAIN_STAGES = {f"train@{e}" for e in EXPERIMENTS}
EVAL_STAGES = {f"evaluate@{e}" for e in EXPERIMENTS}


def test_repro_caches_and_reruns_only_what_changed(dvc_project, tmp_path, small_params):
    project, repro, set_param, env = dvc_project
    assert repro() == DATA_STAGES | TRAIN_STAGES | EVAL_STAGES | {"report", "ship"}
    assert repro() == set()  # everything cached

    # what a user reads: metrics of every experiment, the plots page, the report, MLflow
    shown = json.loads(_run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], project, env))
    files = next(iter(shown.values()))["data"]
    for name in EXPERIMENTS:
        evaluation = files[f"metrics/{name}/eval.json"]["data"]["val"]
        assert set(evaluation) == {"chunk_balanced", "chunk", "record"}
        assert 0 <= evaluation["record"]["f1"]["A"] <= 1 and "roc_auc" in evaluation["record"]
        # the last epoch's validation is the evaluate stage's scoring of the same model: one name, one value
        trained = files[f"metrics/{name}/train.json"]["data"]
        assert trained["val_chunk_balanced_accuracy"] == pytest.approx(evaluation["chunk_balanced"]["accuracy"], abs=1e-5)
        assert trained["val_record_accuracy"] == pytest.approx(evaluation["record"]["accuracy"], abs=1e-5)
        history = (project / "plots" / "history" / f"{name}.csv").read_text().splitlines()
        assert len(history) == 1 + small_params["experiments"][name]["epochs"]  # a header, one row per epoch
    assert files["metrics/spectrogram.json"]["data"]["n_records"] > 0
    _run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "page")], project, env)
    page = (tmp_path / "page" / "index.html").read_text()
    for name in EXPERIMENTS:  # one rendered plot per experiment and kind (ids use '_' for '/')
        assert f"plots_history_{name}_csv" in page
        for kind in ("confusion", "roc", "pr"):
            assert f"plots_{kind}_{name}_val_csv" in page, (kind, name)
        assert f"plots/figures/{name}/confusion_val" in page
    results = (project / "reports" / "results.csv").read_text().splitlines()
    assert results[0].startswith("experiment,model,loader,epochs,robust,notebook_chunk_balanced_accuracy,"
                                 "chunk_balanced_accuracy,chunk_accuracy,record_accuracy,record_balanced_accuracy")
    assert len(results) == 1 + len(EXPERIMENTS)
    champion = json.loads((project / "reports" / "champion.json").read_text())
    assert champion["experiment"] in EXPERIMENTS and champion["model_uri"] == "models:/ecgpipe-af@champion"
    _check_the_shipped_detector_is_the_champion(project, champion)
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("ecgpipe-af", "champion").run_id == champion["run_id"]
    run_id = json.loads((project / "models" / EXPERIMENTS[0] / "mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "val_record_f1_A" in run.data.metrics
    assert "evaluation/val_confusion.json" in {a.path for a in client.list_artifacts(run_id, "evaluation")}

    # lineage: the evaluate stage logged the train stage's dvc.lock entry into the run
    lock_entry = json.loads(open(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"dvc/train_{EXPERIMENTS[0]}.lock.json", tracking_uri=env["MLFLOW_TRACKING_URI"])).read())
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"][f"train@{EXPERIMENTS[0]}"]
    assert lock_entry == lock and run.data.tags["dvc_lock_md5"]
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {
        "data/chunks/train.pt", "data/chunks/val.pt", "data/spectrogram/preprocessing.json", "data/signals.pt"}

    # a rerun of the spectrogram stage writes the same bytes: nothing downstream is changed
    assert repro("-f", "-s", "spectrogram") == {"spectrogram"}
    assert _status(project) == {}
    # batch sizes bound memory, but may round otherwise on another CPU: DVC params of their stages
    set_param("spectrogram", "batch_size", 3)
    set_param("train", "eval_batch_size", 128)
    assert set(_status(project)) == {"check", "spectrogram"} | TRAIN_STAGES | EVAL_STAGES | {"report"}
    set_param("spectrogram", "batch_size", small_params["spectrogram"]["batch_size"])
    set_param("train", "eval_batch_size", small_params["train"]["eval_batch_size"])
    assert _status(project) == {}
    # the report registers under study.name's alias: a params dep of the report itself, not only of
    # the train stages whose metrics it reads
    set_param("study", "name", "cv-demo")
    assert set(_status(project)) == {"check", "report"} | TRAIN_STAGES
    set_param("study", "name", small_params["study"]["name"])
    assert _status(project) == {}
    # one experiment's epochs: that experiment's training alone (and what reads its outputs after it), and
    # the report, whose table lists each experiment's epochs; `check` validates every edit of params.yaml
    # first, and its output stays the same (the typo test below)
    set_param("experiments", "mean_spectrum-chunked", "epochs", 1)
    assert set(_status(project)) == {"check", "train@mean_spectrum-chunked", "report"}
    set_param("experiments", "mean_spectrum-chunked", "epochs", small_params["experiments"]["mean_spectrum-chunked"]["epochs"])

    # which stages a data param is a dependency of, from `dvc status` (what reruns after them is DVC's
    # own rule: a stage whose inputs' bytes changed; seen above for spectrogram, below for train)
    # the chunk size: chunk and the trainings (a network's input length), not spectrogram, split or balance
    set_param("chunk", "size", 6)
    assert set(_status(project)) == {"check", "chunk"} | TRAIN_STAGES
    # a spectrogram parameter: spectrogram, and nothing else directly
    set_param("chunk", "size", small_params["chunk"]["size"])
    set_param("spectrogram", "noverlap", 8)
    assert set(_status(project)) == {"check", "spectrogram"}
    set_param("spectrogram", "noverlap", small_params["spectrogram"]["noverlap"])
    assert _status(project) == {}

    # a training rerun on one machine gives the same results, byte for byte; its new MLflow run id in
    # models/NAME makes its evaluation, the report and the shipped detector (which reads metrics/) stale
    name = EXPERIMENTS[0]
    results = [f"metrics/{name}/train.json", f"metrics/{name}/eval.json", f"plots/history/{name}.csv",
               f"plots/confusion/{name}/val.csv", f"plots/roc/{name}/val.csv", f"plots/figures/{name}/confusion_val.png",
               f"models/{name}/model.pt"]  # not results.md: it shows the run's examples/s
    before = {path: (project / path).read_bytes() for path in results}
    assert repro("-f", "-s", f"train@{name}") == {f"train@{name}"}
    assert set(_status(project)) == {f"evaluate@{name}", "report", "ship"}
    assert repro("-s", f"evaluate@{name}") == {f"evaluate@{name}"}
    assert {path: (project / path).read_bytes() for path in results} == before


def test_a_params_typo_stops_dvc_repro_before_anything_is_deleted(dvc_project):
    """`train.batchsize: 10` once gave "Data and pipelines are up to date", exit 0: no stage reads it."""
    project, repro, set_param, env = dvc_project
    repro("download")  # outputs for DVC to delete, were the check not first

    def outputs():  # every stage's outputs but the check's own (DVC deletes that one before it runs)
        return {p: p.read_bytes() for p in (project / "data").rglob("*") if p.is_file() and p.name != "params_checked.json"}

    before = outputs()
    set_param("train", "batchsize", 10)
    result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert ("error: params.yaml: params: train.batchsize: expected one of the known keys ['batch_size', 'device', "
            "'eval_batch_size', 'seed'], got 'an unknown key'") in result.stderr
    assert outputs() == before
    # a bad value of a stage that has not run yet stops here too, before any stage after the check runs
    set_param("train", "batchsize", None)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    del raw["train"]["batchsize"]
    raw["evaluate"]["bootstrap_seed"] = -5
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", "split"], cwd=project, env=env, capture_output=True,
                            text=True)
    assert result.returncode != 0 and "evaluate.bootstrap_seed: expected a seed from 0 to" in result.stderr
    assert "Running stage 'check'" in result.stdout and "Running stage 'spectrogram'" not in result.stdout
    assert not (project / "data" / "spectrogram").exists()
    raw["evaluate"]["bootstrap_seed"] = 12345
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert repro("download") == {"check"}  # valid again: nothing else reruns


def _check_the_shipped_detector_is_the_champion(project, champion):
    """The ship stage's pretrained/: the champion's predictor, byte for byte, which scores a validation
    recording as its evaluate stage did, and a model card with its figures."""
    import pandas as pd

    from ecgpipe.inference.predictor import Predictor
    from ecgpipe.inference.readers import read_recording
    from ecgpipe.pipeline.ship import shipped_model

    folder, named = shipped_model(project / "pretrained")
    assert champion["experiment"] in named and champion["run_id"] in named
    source = project / "predictors" / champion["experiment"]
    for path in source.rglob("*"):
        if path.is_file():
            assert (folder / path.relative_to(source)).read_bytes() == path.read_bytes(), path
    predictions = pd.read_csv(project / "plots" / "confusion" / champion["experiment"] / "val.csv")
    first = predictions.iloc[0]
    got = Predictor.from_folder(folder).classify(read_recording(project / "data" / "records" / f"{first['record']}.mat"))
    assert got["label"] == first["predicted"] and got["p_A"] == pytest.approx(first["p_A"], abs=1e-5)
    evaluation = json.loads((project / "metrics" / champion["experiment"] / "eval.json").read_text())["val"]["record"]
    card = (project / "pretrained" / "MODEL_CARD.md").read_text()
    low, high = evaluation["ci"]["f1"]["A"]
    assert f"{evaluation['f1']['A']:.3f} [{low:.3f}–{high:.3f}] |" in card
    assert "## Intended use" in card and "not a medical device" in card and "ODC-By 1.0" in card
