"""AuthCache: results live at most ttl seconds, memory is bounded, secrets are not keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtimes.store import AuthCache, ConnectorGrant, KeyGrant, open_store
from tests.store_backends import StoreBackend


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """Wraps a real store and counts authenticate calls."""

    def __init__(self, store: object) -> None:
        self.inner = store
        self.key_calls = 0
        self.connector_calls = 0

    def authenticate_key(self, presented: str) -> KeyGrant | None:
        self.key_calls += 1
        return self.inner.authenticate_key(presented)  # type: ignore[attr-defined, no-any-return]

    def authenticate_connector_token(self, presented: str) -> ConnectorGrant | None:
        self.connector_calls += 1
        return self.inner.authenticate_connector_token(presented)  # type: ignore[attr-defined, no-any-return]


def test_revocation_reaches_cached_callers_within_the_ttl(store_backend: StoreBackend) -> None:
    with store_backend.open() as store, store_backend.open() as cli:
        cli.add_tenant("acme")
        cli.add_deployment("acme", "gemma")
        info, key = cli.add_key("acme")
        token_info, token = cli.add_connector_token("acme", ["gemma"])
        clock = FakeClock()
        counting = CountingStore(store)
        cache = AuthCache(counting, ttl=1.0, clock=clock)  # type: ignore[arg-type]

        grant = cache.get_key_grant(key)
        assert grant is not None and grant.key_id == info.id
        assert cache.get_connector_grant(token) is not None
        cli.revoke_key(info.id)
        cli.revoke_connector_token(token_info.id)

        clock.now += 0.999  # still inside the ttl: the cached grant is served, no store read
        assert cache.get_key_grant(key) == grant
        assert cache.get_connector_grant(token) is not None
        assert (counting.key_calls, counting.connector_calls) == (1, 1)

        clock.now += 0.001  # ttl reached: the revocation is seen
        assert cache.get_key_grant(key) is None
        assert cache.get_connector_grant(token) is None
        assert (counting.key_calls, counting.connector_calls) == (2, 2)


def test_negative_results_are_cached_too_and_expire(tmp_path: Path) -> None:
    with open_store(tmp_path / "d") as store:
        store.add_tenant("acme")
        clock = FakeClock()
        counting = CountingStore(store)
        cache = AuthCache(counting, ttl=1.0, clock=clock)  # type: ignore[arg-type]
        unknown = "sk-tokios-aaaaaaaaaaaa_" + "B" * 43
        for _ in range(100):
            assert cache.get_key_grant(unknown) is None
        assert counting.key_calls == 1
        clock.now += 1.5
        assert cache.get_key_grant(unknown) is None
        assert counting.key_calls == 2


def test_keys_and_tokens_do_not_share_entries(tmp_path: Path) -> None:
    with open_store(tmp_path / "d") as store:
        store.add_tenant("acme")
        store.add_deployment("acme", "gemma")
        _, key = store.add_key("acme")
        cache = AuthCache(store, clock=FakeClock())
        assert cache.get_key_grant(key) is not None
        assert cache.get_connector_grant(key) is None  # the key's cached grant is not reused
        assert cache.get_key_grant(key) is not None


def test_size_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    with open_store(tmp_path / "d") as store:
        store.add_tenant("acme")
        clock = FakeClock()
        counting = CountingStore(store)
        cache = AuthCache(counting, ttl=60.0, clock=clock, max_entries=3)  # type: ignore[arg-type]
        keys = [store.add_key("acme")[1] for _ in range(4)]
        for key in keys[:3]:
            cache.get_key_grant(key)
        cache.get_key_grant(keys[0])  # keys[0] is now the most recently used
        cache.get_key_grant(keys[3])  # evicts keys[1]
        assert len(cache) == 3
        calls = counting.key_calls
        cache.get_key_grant(keys[0])
        cache.get_key_grant(keys[3])
        assert counting.key_calls == calls
        cache.get_key_grant(keys[1])
        assert counting.key_calls == calls + 1
        cache.clear()
        assert len(cache) == 0


def test_entries_are_keyed_by_a_hash_never_the_secret(tmp_path: Path) -> None:
    with open_store(tmp_path / "d") as store:
        store.add_tenant("acme")
        _, key = store.add_key("acme")
        cache = AuthCache(store, clock=FakeClock())
        cache.get_key_grant(key)
        cache.get_key_grant(key[:-1] + "x")
        dump = repr(vars(cache)) + repr(list(cache._entries))
        assert key not in dump and key[-43:] not in dump and key[-43:-20] not in dump


def test_ttl_zero_caches_nothing_and_bad_settings_are_refused(tmp_path: Path) -> None:
    with open_store(tmp_path / "d") as store:
        counting = CountingStore(store)
        cache = AuthCache(counting, ttl=0, clock=FakeClock())  # type: ignore[arg-type]
        cache.get_key_grant("nope")
        cache.get_key_grant("nope")
        assert counting.key_calls == 2 and len(cache) == 0
        with pytest.raises(ValueError, match="ttl"):
            AuthCache(store, ttl=-1)
        with pytest.raises(ValueError, match="max_entries"):
            AuthCache(store, max_entries=0)


def test_deployments_for_resolves_all_deployment_keys_with_the_same_ttl(tmp_path: Path) -> None:
    with open_store(tmp_path / "d") as store:
        store.add_tenant("acme")
        store.add_deployment("acme", "gemma")
        store.add_deployment("acme", "qwen")
        _, all_key = store.add_key("acme")
        _, scoped_key = store.add_key("acme", ["qwen"])
        clock = FakeClock()
        cache = AuthCache(store, clock=clock)
        everything = cache.get_key_grant(all_key)
        scoped = cache.get_key_grant(scoped_key)
        assert everything is not None and scoped is not None
        assert cache.deployments_for(everything) == {"gemma", "qwen"}
        assert cache.deployments_for(scoped) == {"qwen"}
        store.add_deployment("acme", "llama")
        assert cache.deployments_for(everything) == {"gemma", "qwen"}  # cached
        clock.now += 1.0
        assert cache.deployments_for(everything) == {"gemma", "qwen", "llama"}
        assert cache.deployments_for(scoped) == {"qwen"}
        ghost = KeyGrant(key_id="key_x", tenant_id="ten_x", tenant_name="ghost",
                         deployments=None)
        assert cache.deployments_for(ghost) == frozenset()
