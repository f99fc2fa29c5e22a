"""`authsvc demo` against a running server: a token, verified by authsvc and locally."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from authsvc.demo import run_demo
from authsvc.testing import RunningAuthority, start_authority


async def _demo_credentials(running: RunningAuthority) -> dict[str, dict[str, str]]:
    # Registered as `authsvc serve --dev` registers its demo service.
    demo = await running.create_client(
        "demo-service",
        scopes=["demo:read", "demo:write"],
        audiences=["demo-api", running.settings.audience],
    )
    return {"demo": {"client_id": demo.client_id, "client_secret": demo.client_secret}}


async def test_the_demo_shows_a_token_verified_by_authsvc_and_locally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with start_authority(tmp_path) as running:
        settings = dataclasses.replace(running.settings, grpc_address=running.address)
        assert await run_demo(settings, await _demo_credentials(running)) == 0
        active = running.authority.ctx.key_ring.signer.kid
    out = capsys.readouterr().out
    assert "verified: sub=" in out
    assert f"verified locally too, with kid={active} " in out


async def test_the_demo_says_what_to_do_when_authsvc_is_not_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with start_authority(tmp_path) as running:
        credentials = await _demo_credentials(running)
        settings = dataclasses.replace(running.settings, grpc_address="127.0.0.1:1")
    assert await run_demo(settings, credentials) == 1
    assert "is `make run` up?" in capsys.readouterr().out


async def test_the_demo_tells_a_refusal_from_an_authsvc_that_is_not_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Credentials from another database (a data directory reset under them) had been reported
    as "could not reach authsvc": the operator then looked for a server that was up."""
    async with start_authority(tmp_path) as running:
        settings = dataclasses.replace(running.settings, grpc_address=running.address)
        stale = {"demo": {"client_id": "gone", "client_secret": "asc_gone"}}
        assert await run_demo(settings, stale) == 1
    out = capsys.readouterr().out
    assert "refused the demo client: UNAUTHENTICATED" in out
    assert "could not reach" not in out
