"""Studies across machines: one Ray task per (fold, seed), placed by Ray on any node of a cluster.

Each task, on whatever node Ray places it, works in a fresh clone of the study's commit: it
configures the DVC remote, ``dvc pull``s the data stages' outputs, runs ``dvc exp run`` with the
study's ``-S`` values (the same command as a DVC queue worker's, see :mod:`ecgpipe.pipeline.study`),
logging to the tracking server, then ``dvc exp push``es the experiment to the git remote and
``dvc push``es its outputs. Ray retries a task whose worker died (or that failed) a bounded number
of times; the retry first marks the runs its cell left RUNNING as KILLED, so no run stays RUNNING
for ever.

The remotes are the ones :func:`ecgpipe.pipeline.remotes.set_remotes` configured (both named
``ecgpipe``); the tracking server is ``$MLFLOW_TRACKING_URI``, which every node must reach.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ecgpipe.core.errors import StudyError
from ecgpipe.pipeline.remotes import REMOTE, dvc_remote_url, git_remote_url, run_command
from ecgpipe.pipeline.study import dvc_command, prepare_store, queue_commands
from ecgpipe.reporting.study import check_study_name
from ecgpipe.tracking.runs import FOLD_TAG, SEED_TAG, STUDY_TAG

STUDY_BRANCH = "ecgpipe-study-{name}"  # the git branch that carries a study's commit to the workers
DATA_TARGETS = ["--with-deps", "chunk", "signals", "features"]  # the data stages' outputs: every cell starts from them
# (features: no cell reads it, but `dvc exp apply` of a cell's experiment checks out every cached output)


@dataclass(frozen=True)
class Cell:
    """One task of a study: everything a worker needs, and nothing from the machine that sent it."""

    study: str
    fold: int
    seed: int
    exp_run: list[str]  # the `dvc exp run` command, as a queue worker would run it (without --queue)
    git_url: str
    branch: str
    commit: str
    dvc_url: str
    tracking_uri: str
    threads: int
    env: dict[str, str] = field(default_factory=dict)  # extra environment (e.g. DVC_NO_ANALYTICS)

    @property
    def exp_name(self) -> str:
        return self.exp_run[self.exp_run.index("--name") + 1]


def cells(name: str, folds: int, seeds: list[int], experiments: list[str], **common) -> list[Cell]:
    """The study's cells: ``queue_commands``'s experiments, run in place instead of queued."""
    out = []
    for command in queue_commands(name, folds, seeds, experiments):
        exp_run = [c for c in command if c != "--queue"]
        fold = int(next(v.split("=")[1] for v in exp_run if v.startswith("split.fold=")))
        seed = int(next(v.split("=")[1] for v in exp_run if v.startswith("train.seed=")))
        out.append(Cell(name, fold, seed, exp_run, **common))
    return out


def _sh(args: list[str], cwd: Path | None, env: dict[str, str], guarded: bool = False) -> str:
    """Run a command; a StudyError with its last output lines if it fails.

    ``guarded`` (on a worker): the command runs in its own process group, and a watcher ends that
    group if this process dies (killed, out of memory), so that Ray's retry never trains beside an
    orphan of the attempt before it."""
    process = subprocess.Popen(dvc_command(args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=guarded)
    watcher = None
    if guarded:
        watcher = subprocess.Popen(["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                                    f"kill -TERM -- -{process.pid} 2>/dev/null"], start_new_session=True)
    try:
        stdout, stderr = process.communicate()
    finally:
        if watcher is not None:
            watcher.kill()
            watcher.wait()
    if process.returncode != 0:
        tail = (stderr.strip() or stdout.strip()).splitlines()[-5:]
        raise StudyError(f"`{shlex.join(args)}` failed (exit {process.returncode}): " + " / ".join(tail))
    return stdout


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray cluster of ``nodes`` nodes on this machine (``ray.cluster_utils``), shut down on leaving,
    for trying the Ray backend without several machines. Yields its address and {node id: address}."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus_per_node})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus_per_node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        alive = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        ray.shutdown()
        yield cluster.address, alive
    finally:
        cluster.shutdown()


def end_stale_runs(cell: Cell) -> list[str]:
    """Mark the runs of ``cell`` that an earlier, killed attempt left RUNNING as KILLED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cell.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    stale = client.search_runs(
        experiments, max_results=1000, filter_string=(
            f"tags.{STUDY_TAG} = '{cell.study}' and tags.{FOLD_TAG} = '{cell.fold}' and "
            f"tags.{SEED_TAG} = '{cell.seed}' and attributes.status = 'RUNNING'"))
    for run in stale:
        client.set_terminated(run.info.run_id, "KILLED")
    return [run.info.run_id for run in stale]


def run_cell(cell: Cell) -> dict:
    """One cell on this node: clone, pull, ``dvc exp run``, push. Returns where it ran."""
    import ray

    workdir = Path(tempfile.mkdtemp(prefix=f"ecgpipe-{cell.exp_name}-"))
    env = dict(os.environ, **cell.env, MLFLOW_TRACKING_URI=cell.tracking_uri, OMP_NUM_THREADS=str(cell.threads),
               # the stages import the study commit's ecgpipe, not the one this worker has installed
               PYTHONPATH=str(workdir))
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    killed = end_stale_runs(cell)
    try:
        _sh(["git", "clone", "-q", "--branch", cell.branch, cell.git_url, str(workdir)], None, env, guarded=True)
        _sh(["git", "checkout", "-q", "-B", cell.branch, cell.commit], workdir, env, guarded=True)
        _sh(["dvc", "remote", "add", "--local", "--default", "--force", REMOTE, cell.dvc_url], workdir, env, guarded=True)
        # what the driver pushed: a file missing from the remote fails here, naming it, rather than
        # sending the stages off to download the archive again
        _sh(["dvc", "pull", *DATA_TARGETS], workdir, env, guarded=True)
        _sh(cell.exp_run, workdir, env, guarded=True)
        _sh(["dvc", "exp", "push", "--force", "origin", cell.exp_name], workdir, env, guarded=True)
        _sh(["dvc", "push"], workdir, env, guarded=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    context = ray.get_runtime_context()
    return {"experiment": cell.exp_name, "fold": cell.fold, "seed": cell.seed, "node_id": context.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "ended_stale_runs": killed}


def _checked_tree(root: Path) -> str:
    """The commit to run: HEAD, with no uncommitted change to a tracked file (a worker would not see it)."""
    env = dict(os.environ)
    dirty = _sh(["git", "status", "--porcelain", "--untracked-files=no"], root, env).strip()
    if dirty:
        raise StudyError(f"uncommitted changes ({dirty.splitlines()[0].strip()} ...): a study on Ray runs a "
                         "commit in fresh clones; commit them first")
    return _sh(["git", "rev-parse", "HEAD"], root, env).strip()


def _push_data(root: Path) -> None:
    """``dvc push`` the data stages' outputs; a StudyError if some are in neither this clone's cache
    nor the remote (DVC only warns, and every cell would then fail to pull them)."""
    args = ["dvc", "push", "-r", REMOTE, *DATA_TARGETS]
    result = run_command(args, root)
    if result.returncode != 0 or "Missing cache files" in result.stderr:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        missing = [line for line in lines if line.startswith("md5:") or line.startswith("data/")]
        raise StudyError(f"`{shlex.join(args)}`: the data stages' outputs are not all in this clone's cache or the "
                         f"DVC remote ({', '.join(missing) or lines[-1:]}); run `dvc repro chunk signals features` first")


def run_ray_study(name: str, folds: int, seeds: list[int], experiments: list[str], experiment_name: str, *,
                  address: str | None = None, cpus: int = 1, gpus: float = 0, retries: int = 2,
                  root: Path = Path("."), progress: bool = True) -> list[dict]:
    """Send the study's cells to the Ray cluster at ``address`` (a new local one when None), and
    wait for them. Returns one row per cell (where it ran); a StudyError names the failed cells."""
    import ray

    from ecgpipe.tracking.runs import tracking_uri

    check_study_name(name)
    if folds < 2:
        raise StudyError(f"a study needs at least 2 folds, got {folds}")
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        raise StudyError(f"MLFLOW_TRACKING_URI={uri}: a study on Ray logs from every node to one tracking server; "
                         "start one (`ecgpipe server start`) and export the URI it prints")
    root = Path(root).resolve()
    commit = _checked_tree(root)
    git_url, dvc_url = git_remote_url(root), dvc_remote_url(root)
    env = dict(os.environ)
    branch = STUDY_BRANCH.format(name=name)
    print(f"$ git push {REMOTE} HEAD:{branch}; dvc push the data stages' outputs", flush=True)
    _sh(["git", "push", "-q", "--force", REMOTE, f"HEAD:refs/heads/{branch}"], root, env)
    _push_data(root)
    prepare_store(uri, experiment_name)

    common = {"git_url": git_url, "branch": branch, "commit": commit, "dvc_url": dvc_url, "tracking_uri": uri,
              "threads": cpus, "env": {"DVC_NO_ANALYTICS": "1"}}
    todo = cells(name, folds, seeds, experiments, **common)
    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=True)(run_cell)
        pending = {task.remote(cell): cell for cell in todo}
        results, failed = [], []
        bar = _progress(len(pending), f"study {name}", progress)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            try:
                results.append(ray.get(done[0]))
            except Exception as exc:  # the task's last attempt failed (a RayTaskError wraps the cause)
                cause = getattr(exc, "cause", None) or exc
                text = str(cause).strip()
                failed.append(f"{cell.exp_name}: {text.splitlines()[-1] if text else type(cause).__name__}")
                end_stale_runs(cell)  # its last attempt may have died mid-run
            bar.update(1)
        bar.close()
    finally:
        ray.shutdown()
    if failed:
        raise StudyError(f"{len(failed)} of {len(todo)} cells of study {name} failed after {retries} retries: "
                         + "; ".join(failed))
    return sorted(results, key=lambda r: (r["seed"], r["fold"]))


def _progress(total: int, what: str, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="cell", disable=not show, file=sys.stderr)
