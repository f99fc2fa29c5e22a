"""How a long-running `authsvc serve` sets up its process: SCHED_BATCH when AUTHSVC_SCHED_BATCH
asks for it (authsvc/scheduling.py), read from /proc thread by thread, and start-up's objects
exempted from the garbage collector's full collections (`freeze_startup_objects`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authsvc.config import ConfigError, Settings
from authsvc.scheduling import prefer_batch_scheduling
from authsvc.serve import scheduling_policy
from tests.fleet import Fleet

linux_only = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH") or not Path("/proc/self/task").is_dir(),
    reason="SCHED_BATCH and /proc/<pid>/task are Linux's",
)


def thread_policies(pid: int) -> dict[int, int]:
    policies = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            policies[int(tid)] = os.sched_getscheduler(int(tid))
        except ProcessLookupError:
            continue  # the thread ended meanwhile
    return policies


# In a child interpreter: this test process keeps its own policy.
CHILD = """
import json, os, threading
from authsvc.config import Settings
from authsvc.serve import scheduling_policy

def policies():
    found = {{}}
    for tid in os.listdir("/proc/self/task"):
        try:
            found[tid] = os.sched_getscheduler(int(tid))
        except ProcessLookupError:
            pass  # a thread that has just ended
    return found

before = threading.Event(); release = threading.Event()
early = threading.Thread(target=lambda: (before.set(), release.wait()), daemon=True)
early.start(); before.wait()
try:
    result = scheduling_policy(Settings(sched_batch={enabled}))
    late_policy = []
    late = threading.Thread(target=lambda: late_policy.append(os.sched_getscheduler(0)))
    late.start(); late.join()
    seen = policies()
finally:
    release.set()
early.join()
print(json.dumps({{"result": result, "policies": seen, "late": late_policy[0]}}))
"""


def run_child(enabled: bool) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(enabled=enabled)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


@linux_only
def test_every_thread_already_running_and_every_later_one_runs_batch() -> None:
    child = run_child(True)
    assert child["result"] == "SCHED_BATCH"
    policies = child["policies"]
    assert isinstance(policies, dict)
    assert len(policies) >= 2  # the main thread and `early`
    assert set(policies.values()) == {os.SCHED_BATCH}
    assert child["late"] == os.SCHED_BATCH


@linux_only
def test_turned_off_the_process_keeps_the_default_policy() -> None:
    child = run_child(False)
    assert child["result"] == "default"
    policies = child["policies"]
    assert isinstance(policies, dict)
    assert set(policies.values()) == {os.SCHED_OTHER}
    assert child["late"] == os.SCHED_OTHER


def test_a_refusal_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse, raising=False)
    monkeypatch.setattr(os, "SCHED_BATCH", 3, raising=False)
    assert prefer_batch_scheduling() == "sched_setscheduler refused (Operation not permitted)"
    assert scheduling_policy(Settings(sched_batch=True)) == (
        "default: sched_setscheduler refused (Operation not permitted)"
    )


def test_a_platform_without_the_policy_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "SCHED_BATCH", raising=False)
    assert prefer_batch_scheduling() == "this platform has no SCHED_BATCH"


def test_a_thread_that_ends_meanwhile_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[int] = []

    def set_policy(tid: int, policy: int, param: object) -> None:
        if tid == 2:
            raise ProcessLookupError(3, "No such process")
        applied.append(tid)

    monkeypatch.setattr(os, "SCHED_BATCH", 3, raising=False)
    monkeypatch.setattr(os, "sched_setscheduler", set_policy, raising=False)
    monkeypatch.setattr(os, "listdir", lambda _: ["1", "2", "3"])
    assert prefer_batch_scheduling() == ""
    assert applied == [1, 3]


def test_the_setting_is_off_unless_asked_for_and_refuses_anything_but_a_boolean() -> None:
    assert Settings.from_env({}).sched_batch is False
    assert Settings.from_env({"AUTHSVC_SCHED_BATCH": "true"}).sched_batch is True
    assert Settings.from_env({"AUTHSVC_SCHED_BATCH": "off"}).sched_batch is False
    with pytest.raises(ConfigError, match="AUTHSVC_SCHED_BATCH='sometimes'"):
        Settings.from_env({"AUTHSVC_SCHED_BATCH": "sometimes"})


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'authsvc.db'}")
    try:
        yield fleet
    finally:
        await fleet.stop_all()


@linux_only
async def test_authsvc_serve_runs_its_threads_under_sched_batch_when_asked(fleet: Fleet) -> None:
    fleet.settings["sched_batch"] = "true"
    replica = await fleet.start("a")  # answering health checks: its gRPC threads are running
    policies = thread_policies(replica.process.pid)
    assert len(policies) > 2
    assert set(policies.values()) == {os.SCHED_BATCH}
    assert '"scheduling": "SCHED_BATCH"' in replica.log_text()


@linux_only
async def test_authsvc_serve_keeps_the_default_policy_by_default(fleet: Fleet) -> None:
    replica = await fleet.start("a")
    assert set(thread_policies(replica.process.pid).values()) == {os.SCHED_OTHER}
    assert '"scheduling": "default"' in replica.log_text()


async def test_authsvc_serve_exempts_what_start_up_built_from_full_collections(
    fleet: Fleet,
) -> None:
    replica = await fleet.start("a")
    [serving] = [
        json.loads(line)
        for line in replica.log_text().splitlines()
        if '"message": "serving"' in line
    ]
    # Modules, descriptors and the server's state: about 100,000 objects on CPython 3.11.
    assert serving["gc_frozen_objects"] > 20_000
