"""Processes as Linux's /proc shows them: what a pid's process is, for code that must never signal
the wrong one (a pid alone is reused). Elsewhere (no /proc) every answer is None."""
from __future__ import annotations

from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command's "(name)" (field 3, the state, first); None when
    there is no such process. Field N of proc(5) is item N - 3."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, field 22): with the pid, one process for good."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[22 - 3])


def parent_pid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[4 - 3])


def command_line(pid: int) -> str | None:
    """The process's arguments joined by spaces; None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
