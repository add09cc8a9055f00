"""The project's remotes, both named ``ecgpipe``: a git remote for commits and DVC experiments
(``dvc exp push``/``pull``), and a DVC remote for the cache (``dvc push``/``pull``).

A local or network path here; ``s3://…``, ``ssh://…`` or any URL DVC and git take elsewhere. The
DVC remote is set in ``.dvc/config.local`` (this clone only: a path on one machine means nothing on
another); commit it with ``dvc remote add --default ecgpipe URL`` when it is a shared URL."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ecgpipe.core.errors import StudyError
from ecgpipe.pipeline.study import dvc_command

REMOTE = "ecgpipe"


def run_command(args: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(dvc_command(args), cwd=root, capture_output=True, text=True)


def _must(args: list[str], root: Path) -> str:
    result = run_command(args, root)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise StudyError(f"`{' '.join(args)}` failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result.stdout.strip()


def set_remotes(git_url: str, dvc_url: str, root: Path = Path(".")) -> None:
    """Point the git remote and the (default) DVC remote ``ecgpipe`` at these URLs. A bare git
    repository is made at a local ``git_url`` that does not exist yet."""
    # a path is stored absolute: a worker's clone lives in another folder
    git_url, dvc_url = (url if "://" in url else str((Path(root) / url).resolve()) for url in (git_url, dvc_url))
    if "://" not in git_url:
        _check_local_remote("--git", Path(git_url), root)
        if Path(git_url).exists() and run_command(["git", "-C", git_url, "rev-parse", "--git-dir"], root).returncode:
            raise StudyError(f"--git {git_url}: a folder that is not a git repository; give a repository, or a new "
                             "path (a bare repository is made there)")
    if "://" not in dvc_url:
        _check_local_remote("--dvc", Path(dvc_url), root)
        cache = run_command(["dvc", "cache", "dir"], root).stdout.strip()
        if cache and _overlap(Path(dvc_url), Path(cache)):
            raise StudyError(f"--dvc {dvc_url}: is the project's DVC cache ({cache}) or overlaps it; a remote is where "
                             "the cache is copied to: give another folder")
    if "://" not in git_url and not Path(git_url).exists():
        _must(["git", "init", "-q", "--bare", git_url], root)
    verb = "set-url" if run_command(["git", "remote", "get-url", REMOTE], root).returncode == 0 else "add"
    _must(["git", "remote", verb, REMOTE, git_url], root)
    _must(["dvc", "remote", "add", "--local", "--default", "--force", REMOTE, dvc_url], root)


def _overlap(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _check_local_remote(option: str, path: Path, root: Path) -> None:
    """A local remote is a folder outside the project (not the project, its cache or its outputs)."""
    if path.exists() and not path.is_dir():
        raise StudyError(f"{option} {path}: is a file; expected a folder (an existing one, or a new path)")
    if _overlap(path, Path(root)):
        raise StudyError(f"{option} {path}: is the project ({Path(root).resolve()}), inside it or around it; a remote "
                         "must be a folder outside the project, or pushes would write into its own files")


def git_remote_url(root: Path = Path(".")) -> str:
    result = run_command(["git", "remote", "get-url", REMOTE], root)
    if result.returncode != 0:
        raise StudyError(f"no git remote {REMOTE!r}: set the remotes first (`ecgpipe remote set --git URL --dvc URL`)")
    return result.stdout.strip()


def dvc_remote_url(root: Path = Path(".")) -> str:
    # `dvc config` merges the config files (`dvc remote list` wraps long URLs over several lines)
    url = run_command(["dvc", "config", f"remote.{REMOTE}.url"], root).stdout.strip()
    if not url:
        raise StudyError(f"no DVC remote {REMOTE!r}: set the remotes first (`ecgpipe remote set --git URL --dvc URL`)")
    return url
