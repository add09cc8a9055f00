"""Several machines on one: run inside a network namespace whose only interface is loopback
(``unshare -n``, then ``ip link set lo up``), so that every service and both Ray nodes are
127.0.0.1. Started here, in temporary folders and on free ports: a PostgreSQL cluster and the
MLflow tracking server on it, a Ray head and a second Ray node (one CPU each), a bare git remote
and a DVC remote. Then a study of 2 experiments x 2 folds on the synthetic recordings runs through
``ecgpipe study run --backend ray``; what it left behind is observed from a third clone, and
everything started is stopped.

Usage: python tests/ray_cluster_scenario.py WORKDIR ARCHIVE OUT_JSON. It writes its observations to
OUT_JSON; tests/test_ray_study.py asserts on them."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import copy_project, small_params_dict  # noqa: E402

EXPERIMENTS = ["mean_spectrum-chunked", "fully_connected-random_chunk"]


def sh(args, cwd, env, check=True):
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def descendants() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)]


def kill_a_worker_mid_training(deadline_s: float = 900) -> dict:
    """Wait for a stage `train.py` of study `drill`, then SIGKILL the Ray worker that runs its cell
    (as the kernel's OOM killer or a lost node would)."""
    import signal

    import psutil

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for process in psutil.process_iter(["cmdline", "cwd"]):
            try:
                if "stages/train.py" in " ".join(process.info["cmdline"] or []) and \
                        "ecgpipe-drill-" in (process.info["cwd"] or ""):
                    worker = next(p for p in process.parents() if "ray::" in " ".join(p.cmdline()))
                    time.sleep(3)  # mid-training: its MLflow run is RUNNING
                    worker.send_signal(signal.SIGKILL)
                    return {"killed_worker": worker.pid, "train_pid": process.pid}
            except (psutil.Error, StopIteration):
                continue
        time.sleep(0.5)
    return {"killed_worker": None}


def kill_drill(project: Path, env: dict, address: str, ecgpipe: list, client, experiment_id: str) -> dict:
    """A study whose first training's worker is killed: Ray retries the cell, the killed attempt's
    run ends KILLED, and the study completes with one FINISHED run per cell."""
    import threading

    killed: dict = {}
    killer = threading.Thread(target=lambda: killed.update(kill_a_worker_mid_training()))
    killer.start()
    drill = sh([*ecgpipe, "study", "run", "--backend", "ray", "--address", address, "--name", "drill",
                "--folds", "2", "--experiments", EXPERIMENTS[0]], project, env, check=False)
    killer.join()
    runs = client.search_runs([experiment_id], filter_string="tags.study = 'drill'")
    train_alive = killed.get("train_pid") is not None and alive(killed["train_pid"])
    return {"returncode": drill.returncode, "stderr": drill.stderr[-3000:], **killed,
            "orphan_train_alive": train_alive,
            "runs": sorted([r.data.tags["fold"], r.info.status] for r in runs)}


def missing_drill(project: Path, env: dict, address: str, ecgpipe: list, dvc_remote: Path) -> dict:
    """A file of the data stages gone from the DVC remote and from the project's cache: the study
    stops before it sends a cell, naming it (DVC's push only warns; every cell's pull would fail)."""
    import shutil

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["signals"]["outs"])
    gone = [next(dvc_remote.rglob(md5[2:])), next((project / ".dvc" / "cache").rglob(md5[2:]))]
    aside = [project.parent / f"moved-away-{i}" for i in range(len(gone))]
    for path, away in zip(gone, aside):
        shutil.move(path, away)
    try:
        started = time.perf_counter()
        result = sh([*ecgpipe, "study", "run", "--backend", "ray", "--address", address, "--name", "gone",
                     "--folds", "2", "--experiments", EXPERIMENTS[0]], project, env, check=False)
        seconds = time.perf_counter() - started
    finally:
        for path, away in zip(gone, aside):
            shutil.move(away, path)
    return {"returncode": result.returncode, "stderr_tail": result.stderr.strip().splitlines()[-1:], "md5": md5,
            "seconds": round(seconds, 1)}


def main(workdir: Path, archive: Path, out: Path) -> None:
    from ecgpipe.pipeline.ray_study import local_cluster
    from ecgpipe.tracking.server import temporary_server

    seen: dict = {"interfaces": sh(["ip", "-o", "addr", "show"], None, os.environ).stdout}
    params = small_params_dict()
    params["split"]["folds"] = 2
    project, env = copy_project(workdir, params, archive)
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.pop("DVC_ROOT", None)
    ecgpipe = [os.path.join(os.path.dirname(sys.executable), "ecgpipe")]
    dvc = [sys.executable, "-m", "dvc"]

    started: dict = {}
    before: list[int] = []
    try:
        with temporary_server("ecgpipe-ray-server-") as state:
            uri = env["MLFLOW_TRACKING_URI"] = state["tracking_uri"]
            postmaster = int((Path(state["folder"]) / "pgdata" / "postmaster.pid").read_text().split()[0])
            started.update(mlflow=state["mlflow_pid"], postgres=postmaster)
            sh(["git", "init", "-q"], project, env)
            sh([*dvc, "init", "-q"], project, env)
            (project / ".gitignore").write_text("/data/\n/models/\n/predictors/\n/mlflow.db\n/mlartifacts/\n")
            sh([*dvc, "repro", "chunk", "signals", "features"], project, env)
            sh([*ecgpipe, "remote", "set", "--git", workdir / "remote.git", "--dvc", workdir / "dvc-remote"], project, env)
            sh(["git", "add", "-A"], project, env)
            sh(["git", "commit", "-qm", "project, with its data stages run"], project, env)
            with local_cluster(nodes=2, cpus_per_node=1) as (address, nodes):
                seen["nodes"] = nodes
                try:
                    observe(project, env, address, uri, ecgpipe, dvc, workdir, seen)
                finally:
                    before = descendants()
    finally:
        time.sleep(2)
        seen["left_running"] = [pid for pid in before + list(started.values()) if alive(pid)]
        out.write_text(json.dumps(seen, indent=1, default=str))


def observe(project: Path, env: dict, address: str, uri: str, ecgpipe: list, dvc: list, workdir: Path,
            seen: dict) -> None:
    """The study on the cluster, what it left in the tracking server and the remotes, and the drills."""
    from mlflow.tracking import MlflowClient

    t0 = time.perf_counter()
    study = sh([*ecgpipe, "study", "run", "--backend", "ray", "--address", address, "--name", "cv",
                "--folds", "2", "--experiments", *EXPERIMENTS], project, env, check=False)
    seen["study"] = {"returncode": study.returncode, "stdout": study.stdout, "stderr": study.stderr[-4000:],
                     "seconds": round(time.perf_counter() - t0, 1)}
    seen["ran_on"] = [line.split("(")[1].rstrip(")") for line in study.stdout.splitlines() if "ran on node" in line]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ecgpipe")
    runs = [] if experiment is None else client.search_runs([experiment.experiment_id],
                                                              filter_string="tags.study = 'cv'")
    seen["runs"] = []
    for run in runs:
        artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
        spec = json.loads(Path(client.download_artifacts(run.info.run_id, "model.json", str(workdir))).read_text())
        seen["runs"].append({"name": run.info.run_name, "status": run.info.status, "tags": run.data.tags,
                             "artifact_uri": run.info.artifact_uri, "artifacts": artifacts,
                             "model_json_experiment": spec.get("experiment"),
                             "has_val_f1": "val_record_f1_A" in run.data.metrics})

    if study.returncode != 0:
        return
    # a third clone, from the remotes only: the experiments and their models come back
    third = workdir / "third"
    sh(["git", "clone", "-q", "--branch", "ecgpipe-study-cv", workdir / "remote.git", third], None, env)
    sh([*dvc, "remote", "add", "--local", "--default", "ecgpipe", workdir / "dvc-remote"], third, env)
    names = [f"cv-fold{k}-seed12345" for k in range(2)]
    for name in names:
        sh([*dvc, "exp", "pull", "origin", name], third, env)
    seen["exp_list"] = sh([*dvc, "exp", "list", "--all-commits", "--name-only"], third, env).stdout.split()
    restored = {}
    for name in names:
        sh([*dvc, "exp", "apply", name], third, env)
        pulled = sh([*dvc, "pull", *[f"train@{e}" for e in EXPERIMENTS]], third, env, check=False)
        lock = yaml.safe_load((third / "dvc.lock").read_text())
        restored[name] = {"pull_rc": pulled.returncode, "pull_err": pulled.stderr[-1000:],
                          "models": {e: (third / "models" / e / "model.pt").is_file() for e in EXPERIMENTS},
                          "fold_in_lock": lock["stages"]["split"]["params"]["params.yaml"]["split.fold"]}
    seen["restored"] = restored
    seen["kill_drill"] = kill_drill(project, env, address, ecgpipe, client, experiment.experiment_id)
    seen["missing_drill"] = missing_drill(project, env, address, ecgpipe, workdir / "dvc-remote")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
