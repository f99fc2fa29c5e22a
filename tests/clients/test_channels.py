"""Plaintext channels only where nothing leaves the machine, or where the caller says so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from authsvc_client import (
    AsyncAuthClient,
    AsyncAuthInterceptor,
    AuthClient,
    AuthInterceptor,
    ServiceCredentials,
    is_local_target,
)
from authsvc_client._channels import plaintext_refusal

REMOTE = "authsvc.internal:50051"


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50051",
        "127.8.9.10:50051",
        "127.0.0.1",
        "localhost:50051",
        "LOCALHOST:50051",
        "[::1]:50051",
        "[::1]",
        "dns:///127.0.0.1:50051",
        "dns:///localhost:50051",
        "dns:localhost:50051",
        "dns://10.0.0.53/127.0.0.1:50051",
        "ipv4:127.0.0.1:1,127.0.0.2:2",
        "ipv6:[::1]:50051",
        "unix:/run/authsvc.sock",
        "unix:///run/authsvc.sock",
        "unix-abstract:authsvc",
    ],
)
def test_local_targets(target: str) -> None:
    assert is_local_target(target)
    assert plaintext_refusal(target, plaintext=False) is None


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(REMOTE, id="a-name"),
        pytest.param("10.0.0.7:50051", id="a-private-address"),
        pytest.param("0.0.0.0:50051", id="any-address"),
        pytest.param("[::]:50051", id="any-address-v6"),
        pytest.param("localhost.example.com:50051", id="localhost-prefix"),
        pytest.param("127.0.0.1.nip.io:50051", id="loopback-prefix"),
        pytest.param("[::ffff:127.0.0.1]:50051", id="v4-mapped"),
        pytest.param("127.1:50051", id="short-form"),
        pytest.param("dns:///authsvc.internal:50051", id="dns-name"),
        pytest.param("dns://10.0.0.53/localhost:50051", id="localhost-by-a-chosen-resolver"),
        pytest.param("ipv4:127.0.0.1:1,10.0.0.7:2", id="one-address-remote"),
        pytest.param("ipv4:localhost:1", id="ipv4-scheme-takes-literals-only"),
        pytest.param("xds:///authsvc", id="another-resolver"),
        pytest.param("", id="empty"),
        pytest.param("::1", id="v6-without-brackets"),
    ],
)
def test_targets_that_leave_the_machine(target: str) -> None:
    assert not is_local_target(target)
    refusal = plaintext_refusal(target, plaintext=False)
    assert refusal is not None
    assert "TLS" in refusal
    assert "plaintext=True" in refusal
    assert plaintext_refusal(target, plaintext=True) is None


OPENERS: list[Any] = [
    pytest.param(lambda target, **kw: AuthClient.connect(target, **kw), id="AuthClient"),
    pytest.param(lambda target, **kw: AsyncAuthClient.connect(target, **kw), id="AsyncAuthClient"),
    pytest.param(
        lambda target, **kw: ServiceCredentials(target, client_id="c", client_secret="s", **kw),
        id="ServiceCredentials",
    ),
    pytest.param(
        lambda target, **kw: AuthInterceptor(target, issuer="https://i", audience="a", **kw),
        id="AuthInterceptor",
    ),
    pytest.param(
        lambda target, **kw: AsyncAuthInterceptor(target, issuer="https://i", audience="a", **kw),
        id="AsyncAuthInterceptor",
    ),
]


@pytest.mark.parametrize("open_", OPENERS)
async def test_an_address_off_the_machine_is_refused_before_anything_is_sent(
    open_: Callable[..., Any],
) -> None:
    with pytest.raises(ValueError, match=r"not on this machine.*plaintext=True"):
        open_(REMOTE)


@pytest.mark.parametrize("open_", OPENERS)
@pytest.mark.parametrize("target", ["127.0.0.1:1", REMOTE])
async def test_a_local_address_or_plaintext_by_choice_opens(
    open_: Callable[..., Any], target: str
) -> None:
    opened = open_(target, plaintext=target == REMOTE)
    close = getattr(opened, "close", None)
    if close is not None:
        result = close()
        if hasattr(result, "__await__"):
            await result
