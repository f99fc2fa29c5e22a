"""Health that reflects the database: is this replica ready for calls that need it?

Every `interval` seconds a probe makes one cheap round trip through the store (a read-only
transaction reading the last event cursor), bounded by `timeout`. `decide` turns the last probe
and whether the process is shutting down into SERVING or NOT_SERVING; listeners (the gRPC health
service, see `authsvc.rpc.server`) hear each change. The gateway's `/readyz` and the metrics read
the same state.

No hysteresis: the first failed probe says NOT_SERVING and the first answered one SERVING again.
Load balancers and orchestrators apply thresholds of their own (a Kubernetes readiness probe
fails after 3 misses by default); a second threshold here would only delay both changes.

Once shutting down, the verdict is NOT_SERVING for good, whatever the database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from authsvc.errors import TemporarilyUnavailable
from authsvc.storage.sql import SqlStore

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """How one probe of the database ended."""

    ANSWERED = "answered"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class Probe:
    """One probe: its outcome, how long it took (the timeout, for one that ran out of it), and for
    a failure what the store said (safe to log: a `TemporarilyUnavailable` description or an
    exception's class name)."""

    outcome: Outcome
    seconds: float
    detail: str = ""


class Verdict(NamedTuple):
    """SERVING (True) or NOT_SERVING (False), and why, for the log."""

    serving: bool
    reason: str


def decide(last: Probe | None, *, shutting_down: bool) -> Verdict:
    """The health this replica reports, from its last probe of the database.

    `last` is None before the first probe and when the probe is turned off: the process alone
    decides then (it could not have started without its database).
    """
    if shutting_down:
        return Verdict(False, "shutting down")
    if last is None:
        return Verdict(True, "the database is not probed")
    if last.outcome is Outcome.TIMED_OUT:
        return Verdict(False, f"the database did not answer within {last.seconds:.1f} s")
    if last.outcome is Outcome.FAILED:
        return Verdict(False, f"the database probe failed: {last.detail}")
    return Verdict(True, "the database answered")


Listener = Callable[[Verdict], Awaitable[None]]


class DatabaseHealth:
    """Probes the store and keeps the verdict; `listeners` are awaited with each change of it.

    `probe_now()` is one probe (tests call it instead of waiting for the interval); `start()`
    repeats it every `interval` seconds until `stop()`. An interval of 0 turns the repetition off.
    """

    def __init__(self, store: SqlStore, *, interval: float, timeout: float) -> None:
        self._store = store
        self.interval = interval
        self.timeout = timeout
        self.last: Probe | None = None
        self.probes: Counter[Outcome] = Counter()
        self.shutting_down = False
        self.verdict = decide(None, shutting_down=False)
        self.listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    async def probe_now(self) -> Verdict:
        """Probe the database once; the verdict, once every listener has heard of a change."""
        self.last = await self._probe()
        self.probes[self.last.outcome] += 1
        return await self._publish()

    async def begin_shutdown(self) -> None:
        """NOT_SERVING from now on, so balancers drain this replica; no probe changes it back."""
        self.shutting_down = True
        await self._publish()

    def start(self) -> None:
        """Probe at once, then every `interval` seconds, in the background (unless turned off)."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="database-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.probe_now()
            except Exception:
                log.exception("database health: telling the listeners failed; probing again")
            await asyncio.sleep(self.interval)

    async def _probe(self) -> Probe:
        started = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: see authsvc.events (wait_for can eat a cancel).
            async with asyncio.timeout(self.timeout):
                async with self._store.transaction(readonly=True) as tx:
                    await tx.last_event_cursor()
        except TimeoutError:
            return Probe(Outcome.TIMED_OUT, self.timeout)
        except TemporarilyUnavailable as exc:
            return Probe(Outcome.FAILED, time.perf_counter() - started, exc.description)
        except Exception as exc:  # not an outage the store knows (a dropped table?): a bug to see
            log.warning("database health: the probe failed unexpectedly", exc_info=True)
            return Probe(Outcome.FAILED, time.perf_counter() - started, type(exc).__name__)
        return Probe(Outcome.ANSWERED, time.perf_counter() - started)

    async def _publish(self) -> Verdict:
        verdict = decide(self.last, shutting_down=self.shutting_down)
        changed = verdict.serving != self.verdict.serving
        self.verdict = verdict
        if changed:
            quiet = verdict.serving or self.shutting_down  # a drain is not a fault
            log.log(
                logging.INFO if quiet else logging.WARNING,
                "health: %s",
                "SERVING" if verdict.serving else "NOT_SERVING",
                extra={"reason": verdict.reason},
            )
            for listener in list(self.listeners):
                await listener(verdict)
        return verdict
