"""Operator metrics: every call counted by method and status, state gauges read at scrape time."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from tests.databases import table_renamed
from tests.waiting import eventually


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_calls_are_counted_by_method_and_status(running, tokens):
    port = running.server.metrics.serve("127.0.0.1:0")
    await tokens.PublishKeys(pb.PublishKeysRequest())
    with pytest.raises(grpc.aio.AioRpcError):
        await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id="x"))

    text = await asyncio.to_thread(_scrape, port)

    assert 'authsvc_rpc_calls_total{code="OK",method="PublishKeys"} 1.0' in text
    assert 'authsvc_rpc_calls_total{code="UNAUTHENTICATED",method="RevokeFamily"} 1.0' in text
    assert 'authsvc_rpc_duration_seconds_count{method="PublishKeys"} 1.0' in text
    assert 'authsvc_signing_keys{state="active"} 1.0' in text
    assert 'authsvc_signing_keys{state="pending"} 1.0' in text


async def test_a_call_whose_deadline_passed_is_not_counted_as_ok(
    running, tokens, admin, monkeypatch
):
    port = running.server.metrics.serve("127.0.0.1:0")
    never = asyncio.Event()

    async def held(subject: str) -> list[object]:
        await never.wait()
        return []

    monkeypatch.setattr(running.authority, "list_sessions", held)
    request = pb.ListSessionsRequest(subject="alice")
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await tokens.ListSessions(request, metadata=admin, timeout=0.3)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    counted = 'authsvc_rpc_calls_total{code="DEADLINE_EXCEEDED",method="ListSessions"} 1.0'

    async def scraped() -> bool:
        return counted in await asyncio.to_thread(_scrape, port)

    await eventually(scraped)
    assert 'code="OK",method="ListSessions"' not in await asyncio.to_thread(_scrape, port)


async def test_metrics_listen_on_a_bracketed_ipv6_address(running) -> None:
    port = running.server.metrics.serve("[::1]:0")

    def scrape() -> bytes:
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as response:
            return bytes(response.read())

    assert b"authsvc_rpc_calls_total" in await asyncio.to_thread(scrape)


async def test_revocation_gauge_follows_the_state(running, tokens, admin):
    port = running.server.metrics.serve("127.0.0.1:0")
    client = await running.create_client(grant_types=["refresh_token"], audiences=["api"])
    pair = await running.authority.issue_token_pair(subject="ann", client_id=client.client_id)

    await tokens.RevokeFamily(
        pb.RevokeFamilyRequest(family_id=pair.family.family_id), metadata=admin
    )

    text = await asyncio.to_thread(_scrape, port)
    assert "authsvc_revocation_entries 1.0" in text


async def test_the_database_probe_is_counted_and_its_last_outcome_is_a_gauge(running):
    port = running.server.metrics.serve("127.0.0.1:0")
    text = await asyncio.to_thread(_scrape, port)
    assert "authsvc_database_up" not in text  # no probe yet: no claim either way
    assert 'authsvc_database_probes_total{outcome="failed"} 0.0' in text

    await running.authority.health.probe_now()
    text = await asyncio.to_thread(_scrape, port)
    assert "authsvc_database_up 1.0" in text
    assert "authsvc_database_probe_seconds " in text
    async with table_renamed(running.settings.database_url, "event_stream"):
        await running.authority.health.probe_now()

    text = await asyncio.to_thread(_scrape, port)
    assert "authsvc_database_up 0.0" in text
    assert 'authsvc_database_probes_total{outcome="answered"} 1.0' in text
    assert 'authsvc_database_probes_total{outcome="failed"} 1.0' in text
    assert 'authsvc_database_probes_total{outcome="timed_out"} 0.0' in text


async def test_the_feed_says_how_old_its_last_read_is_and_counts_its_heartbeats(
    running, tokens, admin
):
    port = running.server.metrics.serve("127.0.0.1:0")
    stream = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0), metadata=admin)
    while not (await stream.read()).HasField("heartbeat"):  # the replay, then caught up
        pass
    await running.authority.ctx.feed.catch_up()
    text = await asyncio.to_thread(_scrape, port)
    assert "authsvc_revocation_feed_read_age_seconds 0.0" in text
    assert 'authsvc_revocation_heartbeats_total{outcome="sent"} 1.0' in text
    assert 'authsvc_revocation_heartbeats_total{outcome="withheld"} 0.0' in text
    running.clock.advance(42)
    text = await asyncio.to_thread(_scrape, port)
    assert "authsvc_revocation_feed_read_age_seconds 42.0" in text
    stream.cancel()
