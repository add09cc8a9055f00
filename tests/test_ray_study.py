"""`ecgpipe study run --backend ray` on two Ray nodes, a PostgreSQL-backed tracking server, a bare
git remote and a DVC remote, all on loopback inside a network namespace of their own
(tests/ray_cluster_scenario.py does the work; this test asserts on what it saw).

Slow (a PostgreSQL cluster, a Ray cluster, two experiments trained per fold): `.ci/run` runs it."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"mean_spectrum-chunked", "fully_connected-random_chunk"}


def test_a_study_on_two_ray_nodes_logs_to_the_server_and_travels_through_the_remotes(archive_path, tmp_path):
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("this test needs unshare and ip (util-linux, iproute2) to make its own loopback-only network")
    out = tmp_path / "seen.json"
    scenario = f"ip link set lo up && exec {sys.executable} {ROOT / 'tests' / 'ray_cluster_scenario.py'} " \
               f"{tmp_path} {archive_path} {out}"
    result = subprocess.run(["unshare", "-n", "sh", "-c", scenario], capture_output=True, text=True, timeout=1500)
    assert out.is_file(), f"the scenario stopped before writing what it saw:\n{result.stdout}\n{result.stderr[-5000:]}"
    seen = json.loads(out.read_text())
    assert result.returncode == 0, result.stderr[-5000:]

    # the namespace has loopback only, so both Ray nodes are 127.0.0.1 (not the machine's address)
    assert "inet 127.0.0.1/8" in seen["interfaces"] and seen["interfaces"].count(" inet ") == 1
    assert len(seen["nodes"]) == 2 and set(seen["nodes"].values()) == {"127.0.0.1"}
    study = seen["study"]
    assert study["returncode"] == 0, study["stdout"] + study["stderr"]

    # each task ran on one of the two nodes, and both were used (each node has one CPU, a task needs one)
    assert len(seen["ran_on"]) == 2
    assert {node[:12] for node in seen["nodes"]} == set(seen["ran_on"])

    # every run finished on the server, tagged, its artifacts served and readable through the server
    runs = seen["runs"]
    assert sorted((r["name"], r["tags"]["fold"]) for r in runs) == sorted((e, str(k)) for e in EXPERIMENTS for k in (0, 1))
    for run in runs:
        assert run["status"] == "FINISHED", run
        assert run["tags"]["study"] == "cv" and run["tags"]["seed"] == "12345"
        assert run["tags"]["dvc_experiment"] == f"cv-fold{run['tags']['fold']}-seed12345"
        assert run["tags"]["mlflow.source.git.commit"]
        assert run["artifact_uri"].startswith("mlflow-artifacts:/")
        assert {"dvc", "evaluation", "model.json", "training_curves.png"} <= set(run["artifacts"])
        assert run["model_json_experiment"] == run["name"] and run["has_val_f1"]

    # a third clone gets the experiments from the git remote and their models from the DVC remote
    assert {"cv-fold0-seed12345", "cv-fold1-seed12345"} <= set(seen["exp_list"])
    for name, restored in seen["restored"].items():
        assert restored["pull_rc"] == 0, restored["pull_err"]
        assert all(restored["models"].values()), restored
        assert restored["fold_in_lock"] == int(name[len("cv-fold")])

    # a worker killed mid-training: Ray retried its cell, the killed attempt's run ended KILLED (not
    # RUNNING for ever), its training process did not outlive it, and every cell has a FINISHED run
    drill = seen["kill_drill"]
    assert drill["killed_worker"] is not None, "no training of the drill study was seen to kill"
    assert drill["returncode"] == 0, drill["stderr"]
    assert not drill["orphan_train_alive"]
    statuses = {fold: sorted(s for f, s in drill["runs"] if f == fold) for fold in ("0", "1")}
    assert all(s.count("FINISHED") == 1 for s in statuses.values()), drill["runs"]
    assert ["KILLED"] == [s for f, s in drill["runs"] if s != "FINISHED"], drill["runs"]

    # a file of the data stages in neither the cache nor the DVC remote: one line naming it, no cell sent
    missing = seen["missing_drill"]
    assert missing["returncode"] != 0
    line = missing["stderr_tail"][0]
    assert line.startswith("error: `dvc push -r ecgpipe --with-deps chunk signals features`: the data stages' outputs are "
                           "not all in this clone's cache or the DVC remote"), line
    assert f"md5: {missing['md5']}" in line

    # nothing the scenario started is still running
    assert seen["left_running"] == []
