"""Facts about this machine and its processes: CPU seconds, resident memory, loopback checks."""

from __future__ import annotations

import ipaddress
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU seconds of process `pid` (0.0 when it is gone)."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 0, utime 11, stime 12 (man 5 proc, fields 14 and 15).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid`, in bytes."""
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(q / 100.0 * len(sorted_values)) - 1
    return sorted_values[max(0, min(len(sorted_values) - 1, rank))]


def require_loopback(address: str) -> None:
    """Refuse any target that is not on this machine (127.0.0.0/8, ::1, localhost)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing non-loopback target {address!r}")


def cpu_times() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs since boot, from /proc/stat; I/O wait is not idle."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    return fields[3], sum(fields[:8])  # user nice system idle iowait irq softirq steal


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the CPUs' time spent idle between two `cpu_times` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 1.0


@dataclass(frozen=True)
class Quiet:
    """How the machine was when the bench began: seconds waited, and the share of CPU idle."""

    waited_s: float
    idle: float
    quiet: bool


def wait_for_quiet(
    *,
    idle_at_least: float = 0.9,
    window_s: float = 2.0,
    timeout_s: float = 60.0,
    read: Callable[[], tuple[int, int]] = cpu_times,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Quiet:
    """Flush the page cache's dirty pages, then wait, at most `timeout_s`, for a `window_s`
    window in which the CPUs were `idle_at_least` idle.

    On a fresh clone `make bench` starts right after installing the venv, or a test run has just
    left PostgreSQL cleaning up the databases it dropped. The first row measured (Verify) came
    out at 0.75x in a full run started that way, where runs of it alone on the same guest gave
    0.86x-0.90x; whatever the cause was, the rows now start on a quiet machine, or say they did
    not (`describe`).
    """
    os.sync()
    started = clock()
    while True:
        before = read()
        sleep(window_s)
        idle = idle_share(before, read())
        waited = clock() - started
        if idle >= idle_at_least or waited >= timeout_s:
            return Quiet(round(waited, 1), round(idle, 3), idle >= idle_at_least)


def describe(quiet: Quiet | None = None) -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
            "",
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **({"before_start": asdict(quiet)} if quiet is not None else {}),
    }
