"""Failed-login limits: the pure rules (each way they say no), and the digests they count under."""

from __future__ import annotations

import pytest

from authsvc.errors import InvalidRequest
from authsvc.login_limits import (
    Allowed,
    Blocked,
    FailurePolicy,
    LoginPolicy,
    client_of,
    decide,
    decide_all,
    expires_at,
    login_keys,
    with_failure,
    without_failure,
)

POLICY = FailurePolicy(max_failures=3, window=60.0)
LOOSE = FailurePolicy(max_failures=10, window=60.0)
LOGIN = LoginPolicy(account=POLICY, ip=LOOSE)
SECRET = b"k" * 32


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


@pytest.mark.parametrize(
    ("account", "ip", "verdict"),
    [
        pytest.param([], [], Allowed(), id="neither"),
        pytest.param([1.0, 2.0, 3.0], [], Blocked(57), id="account-blocks"),
        pytest.param([], [float(t) for t in range(10)], Blocked(56), id="ip-blocks"),
        pytest.param([5.0, 6.0, 7.0], [float(t) for t in range(10)], Blocked(61), id="longer-wait"),
    ],
)
def test_decide_all_blocks_when_any_key_does(
    account: list[float], ip: list[float], verdict: Allowed | Blocked
) -> None:
    assert decide_all([(account, POLICY), (ip, LOOSE)], 4.0) == verdict


def test_with_failure_keeps_only_what_can_change_a_verdict() -> None:
    assert with_failure([], 5.0, POLICY) == (5.0,)
    # Aged out of the window: dropped.
    assert with_failure([1.0, 70.0], 80.0, POLICY) == (70.0, 80.0)
    # Bounded: only the newest max_failures.
    assert with_failure([10.0, 11.0, 12.0], 13.0, POLICY) == (11.0, 12.0, 13.0)


def test_without_failure_takes_back_one_attempt() -> None:
    assert without_failure((1.0, 2.0, 2.0), 2.0) == (1.0, 2.0)
    assert without_failure((1.0,), 9.0) == (1.0,)  # aged out already: nothing to take back


def test_a_row_expires_when_its_newest_failure_leaves_the_window() -> None:
    assert expires_at((1.0, 7.0), POLICY, 8.0) == 67.0
    assert expires_at((), POLICY, 8.0) == 8.0  # nothing to keep: purge at once


def test_keys_are_digests_of_the_account_as_it_is_looked_up() -> None:
    account, ip = login_keys(SECRET, LOGIN, "alice", "203.0.113.9")
    again, _ = login_keys(SECRET, LOGIN, "alice", "")
    assert account == again
    # Users are matched exactly: "Alice" is another account, whose login must not clear alice's.
    assert login_keys(SECRET, LOGIN, "Alice", "")[0] != account
    assert account.policy == POLICY
    assert ip is not None
    assert ip.policy == LOOSE
    assert len(account.digest) == len(ip.digest) == 32
    assert b"alice" not in account.digest
    assert "alice" not in repr(account).lower()
    assert account.digest not in repr(account).encode()


def test_an_account_and_an_ip_of_the_same_text_are_different_keys() -> None:
    account, ip = login_keys(SECRET, LOGIN, "::1", "::1")
    assert ip is not None
    assert account.digest != ip.digest


def test_keys_depend_on_the_secret() -> None:
    assert login_keys(SECRET, LOGIN, "alice", "")[0] != login_keys(b"o" * 32, LOGIN, "alice", "")[0]


def test_one_ip_has_one_key_whatever_its_spelling() -> None:
    _, short = login_keys(SECRET, LOGIN, "a", "2001:db8::1")
    _, long = login_keys(SECRET, LOGIN, "a", "2001:0DB8:0000:0000:0000:0000:0000:0001")
    assert short == long


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        pytest.param("203.0.113.9", "::ffff:203.0.113.9", True, id="ipv4-mapped-is-ipv4"),
        pytest.param("2001:db8:1:2::1", "2001:db8:1:2:ffff:0:0:9", True, id="one-ipv6-slash-64"),
        pytest.param("2001:db8:1:2::1", "2001:db8:1:3::1", False, id="another-slash-64"),
        pytest.param("203.0.113.9", "203.0.113.10", False, id="another-ipv4"),
    ],
)
def test_one_client_has_one_ip_key(one: str, other: str, same: bool) -> None:
    assert (client_of(one) == client_of(other)) is same
    assert (
        login_keys(SECRET, LOGIN, "a", one)[1] == login_keys(SECRET, LOGIN, "a", other)[1]
    ) is same


def test_no_ip_means_only_the_account_is_limited() -> None:
    assert login_keys(SECRET, LOGIN, "alice", "")[1] is None


@pytest.mark.parametrize(
    "client_ip",
    [
        pytest.param("unknown", id="word"),
        pytest.param("203.0.113.300", id="octet"),
        pytest.param("1" * 65, id="long"),
        pytest.param("203.0.113.9, 10.0.0.1", id="list"),
    ],
)
def test_a_malformed_ip_is_refused_without_echoing_it(client_ip: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        login_keys(SECRET, LOGIN, "alice", client_ip)
    assert client_ip not in refused.value.description
