"""Login failure limits: the pure rule and the bounded, clock-driven store."""

from __future__ import annotations

import pytest
from authsvc_gateway.login_limits import Allowed, Blocked, FailureLimiter, FailurePolicy, decide

POLICY = FailurePolicy(max_failures=3, window=60.0)


@pytest.mark.parametrize(
    ("failures", "now", "verdict"),
    [
        pytest.param([], 0.0, Allowed(), id="none"),
        pytest.param([1.0, 2.0], 3.0, Allowed(), id="under-limit"),
        pytest.param([1.0, 2.0, 3.0], 4.0, Blocked(57), id="at-limit"),
        pytest.param([1.0, 2.0, 3.0], 60.5, Blocked(1), id="almost-free"),
        pytest.param([1.0, 2.0, 3.0], 61.0, Allowed(), id="oldest-aged-out"),
        pytest.param([0.0, 10.0, 20.0, 30.0], 35.0, Blocked(35), id="wait-for-enough-to-age"),
    ],
)
def test_decide(failures: list[float], now: float, verdict: Allowed | Blocked) -> None:
    assert decide(failures, now, POLICY) == verdict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_blocks_then_frees_as_time_moves() -> None:
    clock = Clock()
    limiter = FailureLimiter(POLICY, clock=clock)
    for _ in range(3):
        assert limiter.verdict("alice") == Allowed()
        limiter.record_failure("alice")
    assert limiter.verdict("alice") == Blocked(60)
    assert limiter.verdict("bob") == Allowed()
    clock.now += 60
    assert limiter.verdict("alice") == Allowed()


def test_forget_clears_a_key() -> None:
    limiter = FailureLimiter(POLICY, clock=Clock())
    for _ in range(3):
        limiter.record_failure("alice")
    limiter.forget("alice")
    assert limiter.verdict("alice") == Allowed()


def test_memory_is_bounded_forgetting_the_stalest_keys() -> None:
    limiter = FailureLimiter(POLICY, clock=Clock(), max_keys=2)
    for key in ("a", "b", "a", "c"):
        for _ in range(3):
            limiter.record_failure(key)
    assert limiter.verdict("b") == Allowed()  # evicted
    assert isinstance(limiter.verdict("a"), Blocked)
    assert isinstance(limiter.verdict("c"), Blocked)
