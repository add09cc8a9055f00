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
    if "://" not in git_url and not Path(git_url).exists():
        _must(["git", "init", "-q", "--bare", git_url], root)
    verb = "set-url" if run_command(["git", "remote", "get-url", REMOTE], root).returncode == 0 else "add"
    _must(["git", "remote", verb, REMOTE, git_url], root)
    _must(["dvc", "remote", "add", "--local", "--default", "--force", REMOTE, dvc_url], root)


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
