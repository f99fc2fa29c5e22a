"""`bench.machine.wait_for_quiet`: when the bench starts measuring, with the clock moved by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.machine import Quiet, cpu_times, idle_share, wait_for_quiet


class Machine:
    """CPU readings that advance by one window per sleep, `idle` the share idle in each."""

    def __init__(self, idle: list[float]) -> None:
        self._idle: Iterator[float] = iter(idle)
        self.now = 0.0
        self.ticks = (0, 0)

    def read(self) -> tuple[int, int]:
        return self.ticks

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        idle, total = self.ticks
        self.ticks = (idle + round(next(self._idle) * 1000), total + 1000)

    def clock(self) -> float:
        return self.now


def _wait(machine: Machine, timeout_s: float = 10.0) -> Quiet:
    return wait_for_quiet(
        window_s=2.0,
        timeout_s=timeout_s,
        read=machine.read,
        sleep=machine.sleep,
        clock=machine.clock,
    )


def test_a_quiet_machine_is_measured_after_one_window() -> None:
    assert _wait(Machine([0.97])) == Quiet(waited_s=2.0, idle=0.97, quiet=True)


def test_a_busy_machine_is_waited_for_until_it_quiets() -> None:
    assert _wait(Machine([0.4, 0.7, 0.95])) == Quiet(waited_s=6.0, idle=0.95, quiet=True)


def test_a_machine_that_stays_busy_is_measured_anyway_and_said_so() -> None:
    assert _wait(Machine([0.5] * 10), timeout_s=6.0) == Quiet(waited_s=6.0, idle=0.5, quiet=False)


@pytest.mark.parametrize(
    ("before", "after", "share"),
    [
        pytest.param((100, 1000), (190, 1100), 0.9, id="ninety-percent"),
        pytest.param((100, 1000), (100, 1100), 0.0, id="all-busy"),
        pytest.param((100, 1000), (100, 1000), 1.0, id="no-time-passed"),
    ],
)
def test_idle_share(before: tuple[int, int], after: tuple[int, int], share: float) -> None:
    assert idle_share(before, after) == pytest.approx(share)


def test_this_machine_reports_its_cpu_times() -> None:
    idle, total = cpu_times()
    assert 0 <= idle <= total
