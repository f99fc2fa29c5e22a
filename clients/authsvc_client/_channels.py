"""Which authsvc addresses a plaintext channel may go to.

Client secrets, users' passwords and every token cross the channel to authsvc. Given an address
string, the client library opens a plaintext channel only where nothing leaves the machine: a
loopback IP literal (127.0.0.0/8, ::1), `localhost`, or a Unix domain socket. Anywhere else the
caller chooses, as grpcurl makes them choose with `-plaintext`: pass a `grpc.Channel` built with
TLS, or `plaintext=True` where something else encrypts the hop (a service mesh's sidecar).

Targets are read as gRPC names them (`host:port`, `[::1]:port`, `dns:///host:port`,
`ipv4:127.0.0.1:1,127.0.0.2:2`, `ipv6:[::1]:port`, `unix:/path`, `unix-abstract:name`). Anything
this does not recognise counts as leaving the machine.
"""

from __future__ import annotations

import ipaddress

import grpc

__all__ = ["is_local_target", "plaintext_refusal"]

_LOCAL_SCHEMES = ("unix:", "unix-abstract:")


def _is_loopback_host(host: str, *, names: bool = True) -> bool:
    """A loopback IP literal, or `localhost` where `names` (the system resolver answers it)."""
    if names and host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def _host_of(address: str) -> str:
    """The host of `host`, `host:port`, `[v6]` or `[v6]:port`."""
    if address.startswith("["):
        return address[: address.find("]") + 1] if "]" in address else ""
    host, colon, port = address.rpartition(":")
    return host if colon and port.isdigit() else address


def is_local_target(target: str) -> bool:
    """Whether every address gRPC would reach for `target` is on this machine."""
    if target.startswith(_LOCAL_SCHEMES):
        return True
    for scheme in ("ipv4:", "ipv6:"):
        if target.startswith(scheme):
            addresses = target.removeprefix(scheme).split(",")
            return all(_is_loopback_host(_host_of(a), names=False) for a in addresses)
    names = True
    if target.startswith("dns:"):
        # dns:host:port, dns:///host:port, or dns://resolver/host:port, where a resolver of the
        # caller's choosing answers for names, so that only an IP literal is known to be local
        target = target.removeprefix("dns:")
        if target.startswith("//"):
            authority, _, target = target[2:].partition("/")
            names = not authority
    return bool(target) and _is_loopback_host(_host_of(target), names=names)


def plaintext_refusal(target: str, plaintext: bool) -> str | None:
    """Why a plaintext channel to `target` is refused, or None where it may be opened: a local
    target always, any other only with `plaintext=True`."""
    if plaintext or is_local_target(target):
        return None
    return (
        f"{target!r} is not on this machine, and a plaintext channel would carry secrets and "
        "tokens in the clear: pass a grpc.Channel built with TLS (grpc.secure_channel), or "
        "plaintext=True where something else encrypts the hop (a service mesh)"
    )


def plaintext_channel(target: str, plaintext: bool) -> grpc.Channel:
    """A plaintext sync channel to `target`; ValueError where `plaintext_refusal` says no."""
    require_plaintext_allowed(target, plaintext)
    return grpc.insecure_channel(target)


def aio_plaintext_channel(target: str, plaintext: bool) -> grpc.aio.Channel:
    """The asyncio twin of `plaintext_channel`."""
    require_plaintext_allowed(target, plaintext)
    return grpc.aio.insecure_channel(target)


def require_plaintext_allowed(target: str, plaintext: bool) -> None:
    """ValueError, saying what to do instead, where `plaintext_refusal` refuses."""
    refusal = plaintext_refusal(target, plaintext)
    if refusal is not None:
        raise ValueError(refusal)
