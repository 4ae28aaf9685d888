"""CPU time of processes, read from /proc: what a benchmark's systems spent, not only how fast
they went. A process tree's time counts the live descendants as well (Celery's prefork pool)."""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name, field 2, may hold spaces; the fields after it may not.
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds the processes used so far, all threads (gone ones: 0)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_seconds(pids: list[int]) -> float:
    """CPU seconds of the processes and their live descendants."""
    return cpu_seconds([p for pid in pids for p in descendants(pid)])
