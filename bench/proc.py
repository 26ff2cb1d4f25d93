"""What the benchmark reads of its processes from /proc: descendants, CPU time, memory."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a multi-worker server's supervisor and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kib(path: str, key: str) -> int:
    """A `Key:  N kB` line of a /proc status-like file; 0 when absent or unreadable."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds_by_pid(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime
    return out


@dataclass
class Memory:
    peak_kib: int            # VmHWM, summed over the process tree
    rss_kib: int             # VmRSS, summed
    per_process: list[tuple[int, int, int, str]]   # (pid, VmHWM, VmRSS, role)

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def max_process_peak_mib(self) -> float:
        return max((p[1] for p in self.per_process), default=0) / 1024


def _role(pid: int, root: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "forkserver" in cmd:
        return "forkserver"
    return "main" if pid == root else "child"


def memory(pid: int) -> Memory:
    per = [(p, status_kib(f"/proc/{p}/status", "VmHWM"), status_kib(f"/proc/{p}/status", "VmRSS"), _role(p, pid))
           for p in process_tree(pid)]
    per = [p for p in per if p[1] or p[2]]
    return Memory(sum(p[1] for p in per), sum(p[2] for p in per), per)
