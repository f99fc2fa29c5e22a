"""Time, injected: verification reads the clock through this protocol so tests move time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of the current time as seconds since the Unix epoch.

    Structural, so `authsvc.clock.ManualClock` (and any object with `now()`) can be passed.
    """

    def now(self) -> float: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()
