"""SCHED_BATCH for a long-running authsvc process, when the operator asks (AUTHSVC_SCHED_BATCH).

A grpc.aio server is several threads handing work to each other on every call: C-core's
event-engine threads read the sockets, grpc's poller thread takes each completion off the queue
and wakes the event-loop thread, which runs the handler and hands the reply back. Under Linux's
default policy each of those wake-ups may preempt whatever the woken thread's CPU is running,
most often the event loop itself: on the two-core machine of docs/performance.md the loop thread
was preempted about seven times per call, and the kernel, mostly switching and waking threads,
was over a third of the server's CPU. SCHED_BATCH ("without interactivity causing extra preemptions between the workload's
tasks", sched(7)) has a woken thread wait for the running one's time slice or take an idle CPU.
Measured there, an empty call in alternation on a quiet machine: 154-166 → 107-118 µs of server
CPU, 6.7-7.1k → 8.1-9.3k calls/s at concurrency 16; `Verify` about a quarter more calls/s.

Off by default: the policy is a host's decision more than a service's. It changes nothing but
wake-up preemption (nice value, priorities and CPU shares stay, and Linux lets any thread switch
itself to it without privilege), but a batch thread is also "mildly disfavored" when it wakes
beside other programs' threads, so on a crowded host its latency can suffer where a dedicated
one gains the CPU. A process that cannot switch (another platform, a sandbox that forbids the
call) keeps its policy and says why in its start-up log.
"""

from __future__ import annotations

import os

__all__ = ["prefer_batch_scheduling"]


def prefer_batch_scheduling() -> str:
    """Put every thread of this process under SCHED_BATCH; threads started later inherit it from
    the thread that starts them. Returns "" on success, otherwise why the policy is unchanged."""
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or not hasattr(os, "sched_setscheduler"):
        return "this platform has no SCHED_BATCH"
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]  # no /proc: this thread only, which starts the server's threads
    for tid in threads:
        try:
            os.sched_setscheduler(tid, batch, os.sched_param(0))
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except OSError as exc:
            return f"sched_setscheduler refused ({exc.strerror or exc})"
    return ""
