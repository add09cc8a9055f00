"""The same cross-validation study on the real archive twice, once through DVC's local queue and once
through a two-node Ray cluster, against one PostgreSQL-backed MLflow tracking server and a git and a
DVC remote, all on this machine (issue: beyond one machine). A by-hand run, not a test: it trains
2 experiments x 5 folds twice.

    python benchmarks/study_backends.py --archive ../shared/data/training2017.zip --workdir /tmp/backends \
        --out benchmarks/study-backends.json --screenshot benchmarks/study-backends-mlflow-ui.png

It runs itself inside a network namespace with loopback only (`unshare -n`; root), as the slow Ray
test does, so that both Ray nodes are 127.0.0.1. The project is a clone of this repository's HEAD
that shares this checkout's DVC cache (the data stages come out of it, not recomputed). Both
studies use two workers of one thread each: `--jobs 2` for the queue, two one-CPU Ray nodes.
Afterwards it opens the server's MLflow UI in headless Chromium (Debian's `chromium`) on the page
that compares the Ray study's runs, and saves a screenshot."""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def sh(args, cwd, env, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def timed(args, cwd, env) -> dict:
    started = time.perf_counter()
    result = sh(args, cwd, env, check=False)
    return {"command": " ".join(map(str, args)), "returncode": result.returncode,
            "seconds": round(time.perf_counter() - started, 1),
            "stdout": result.stdout[-6000:], "stderr": result.stderr[-3000:]}


def screenshot(uri: str, experiment_id: str, run_ids: list[str], png: Path, profile: Path) -> dict:
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    url = f"{uri}/#/compare-runs?{query}"
    result = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1600,1400",
                             "--virtual-time-budget=20000", f"--screenshot={png}", url],
                            capture_output=True, text=True, timeout=180)
    return {"url": url, "returncode": result.returncode, "png": str(png) if png.is_file() else None}


def main(args) -> None:
    from mlflow.tracking import MlflowClient

    from ecgpipe.core.results import DEFAULT_CHAMPION_METRIC, study_metric
    from ecgpipe.pipeline.ray_study import local_cluster
    from ecgpipe.tracking.server import temporary_server

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    seen: dict = {"interfaces": sh(["ip", "-o", "addr", "show"], None, os.environ).stdout,
                  "commit": sh(["git", "rev-parse", "HEAD"], ROOT, os.environ).stdout.strip(),
                  "experiments": args.experiments, "folds": args.folds}
    env = dict(os.environ, ECGPIPE_ARCHIVE=str(Path(args.archive).resolve()), DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env.pop("DVC_ROOT", None)
    ecgpipe = [os.path.join(os.path.dirname(sys.executable), "ecgpipe")]
    dvc = [sys.executable, "-m", "dvc"]

    project = workdir / "project"
    sh(["git", "clone", "-q", ROOT, project], None, env)
    sh([*dvc, "cache", "dir", "--local", ROOT / ".dvc" / "cache"], project, env)
    sh([*dvc, "checkout", "--with-deps", "chunk", "signals"], project, env)
    seen["data_status"] = sh([*dvc, "status", "chunk", "signals", "--with-deps"], project, env).stdout.strip()
    sh([*ecgpipe, "remote", "set", "--git", workdir / "remote.git", "--dvc", workdir / "dvc-remote"], project, env)

    with temporary_server("ecgpipe-backends-server-") as state:
        uri = env["MLFLOW_TRACKING_URI"] = seen["tracking_uri"] = state["tracking_uri"]
        try:
            # the study's params: the real params.yaml, only the study's name differs between the two
            common = ["--folds", args.folds, "--experiments", *args.experiments]
            seen["dvc_queue"] = timed([*ecgpipe, "study", "run", "--backend", "dvc-queue", "--jobs", 2, "--wait",
                                       "--name", "cv5-queue", *common], project, env)
            sh([*dvc, "queue", "stop"], project, env, check=False)
            with local_cluster(nodes=2, cpus_per_node=1) as (address, nodes):
                seen["nodes"] = nodes
                seen["ray"] = timed([*ecgpipe, "study", "run", "--backend", "ray", "--address", address,
                                     "--cpus-per-task", 1, "--name", "cv5-ray", *common], project, env)
            seen["ray"]["ran_on"] = [line for line in seen["ray"]["stdout"].splitlines() if "ran on node" in line]

            for name in ("cv5-queue", "cv5-ray"):
                out = workdir / "reports" / name
                seen[f"report_{name}"] = timed([*ecgpipe, "study", "report", "--name", name, "--out", out], project, env)
                seen[f"report_{name}"]["study_md"] = (out / "study.md").read_text() if (out / "study.md").is_file() else None

            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name("ecgpipe")
            runs = client.search_runs([experiment.experiment_id], filter_string="tags.study = 'cv5-ray'")
            seen["server_runs"] = sorted(
                [r.info.run_name, r.data.tags.get("study"), r.data.tags.get("fold"), r.info.status,
                 round(r.data.metrics.get(study_metric(DEFAULT_CHAMPION_METRIC), float("nan")), 4)]
                for r in client.search_runs([experiment.experiment_id], filter_string="tags.study LIKE 'cv5-%'"))
            if args.screenshot:
                seen["screenshot"] = screenshot(uri, experiment.experiment_id, [r.info.run_id for r in runs],
                                                Path(args.screenshot).resolve(), workdir / "chromium-profile")
        finally:
            Path(args.out).write_text(json.dumps(seen, indent=1, default=str))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True, help="JSON of what was run and seen")
    parser.add_argument("--screenshot", help="PNG of the MLflow UI comparing the Ray study's runs")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--experiments", nargs="+", default=["conv-chunked", "mean_spectrum-chunked"])
    parsed = parser.parse_args()
    if os.environ.get("ECGPIPE_IN_NAMESPACE") != "1":  # loopback only, so that both Ray nodes are 127.0.0.1
        inner = f"ip link set lo up && ECGPIPE_IN_NAMESPACE=1 exec {sys.executable} {' '.join(map(str, sys.argv))}"
        sys.exit(subprocess.run(["unshare", "-n", "sh", "-c", inner]).returncode)
    sys.path.insert(0, str(ROOT))
    main(parsed)
