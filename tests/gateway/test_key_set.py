"""The JWK Set cache: the advertised max-age shrinks by the copy's own age."""

from __future__ import annotations

from authsvc_gateway.key_set import KeySetCache

from tests.gateway.fakes import JWKS_JSON, FakeBackend


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_held_copy_is_served_with_less_max_age() -> None:
    backend, clock = FakeBackend(max_age_seconds=300), Clock()
    cache = KeySetCache(backend, hold=5.0, clock=clock)
    first = await cache.current()
    assert (first.jwks_json, first.max_age) == (JWKS_JSON, 300)
    clock.now = 4.2
    held = await cache.current()
    assert held.max_age == 295  # age rounded up: a client may never keep it too long
    assert len(backend.called("publish_keys")) == 1
    clock.now = 5.0
    assert (await cache.current()).max_age == 300
    assert len(backend.called("publish_keys")) == 2


async def test_a_zero_max_age_is_never_held() -> None:
    backend, clock = FakeBackend(max_age_seconds=0), Clock()
    cache = KeySetCache(backend, clock=clock)
    await cache.current()
    await cache.current()
    assert len(backend.called("publish_keys")) == 2
