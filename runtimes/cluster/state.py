"""What the nodes of one gateway share: who is alive, where to reach it, what it serves, and
revocation notices. Two implementations of one interface:

* :class:`RedisClusterState` (``--redis redis://...``): nodes on several machines;
* :class:`LocalClusterState`: the worker processes of one machine without Redis, through a
  small SQLite file next to the store (``DIR/cluster.db``).

Per node, the gateway's :class:`~runtimes.cluster.directory.NodeDirectory` calls::

    await state.publish(record, ttl)      # every heartbeat: this node's record, kept ttl s
    records = await state.live_nodes()    # every live node's latest record (this one too)
    await state.withdraw(node_id)         # at shutdown: gone at once, not after the ttl
    await state.announce_revocation(notice)
    notices, cursor = await state.revocations_since(cursor)  # polled; None at first
    await state.aclose()

A node that dies stops publishing; its record expires after ``ttl`` seconds and no node routes to
it any more. Records hold no secret: a node's forwarding URL, whether it drains, and the
deployments its tunnels serve (by tenant id), with their free stream slots.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

__all__ = [
    "ClusterState",
    "LocalClusterState",
    "NodeRecord",
    "RedisClusterState",
    "RevocationNotice",
]

#: Keys and channels in Redis (one gateway per Redis database, or a prefix per gateway).
DEFAULT_PREFIX = "tokios"
#: Revocation notices kept for late readers (a node polls far more often than this).
NOTICE_KEEP_SECONDS = 300.0
#: The most notices kept (a flood of revocations cannot grow the list without bound).
MAX_NOTICES = 10_000


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as the others see it. ``serves`` maps a tenant id to its deployments served by
    this node's tunnels, each with the stream slots free on them now."""

    node_id: str
    forward_url: str
    started_at: float
    draining: bool = False
    serves: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps({"node_id": self.node_id, "forward_url": self.forward_url,
                             "started_at": self.started_at, "draining": self.draining,
                             "serves": self.serves})

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeRecord | None:
        """The record, or None when ``data`` is not one (a newer or damaged entry is skipped,
        never fatal)."""
        try:
            raw = orjson.loads(data)
            serves = {str(t): {str(d): int(n) for d, n in deps.items()}
                      for t, deps in raw.get("serves", {}).items()}
            return cls(node_id=str(raw["node_id"]), forward_url=str(raw["forward_url"]),
                       started_at=float(raw["started_at"]), draining=bool(raw["draining"]),
                       serves=serves)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


@dataclass(frozen=True, slots=True)
class RevocationNotice:
    """``kind`` ``key`` or ``connector_token``, and the record id (``key_...``/``tct_...``)."""

    kind: str
    credential_id: str


class ClusterState(Protocol):
    """See the module doc."""

    async def publish(self, record: NodeRecord, ttl: float) -> None: ...

    async def live_nodes(self) -> list[NodeRecord]: ...

    async def withdraw(self, node_id: str) -> None: ...

    async def announce_revocation(self, notice: RevocationNotice) -> None: ...

    async def revocations_since(self, cursor: int | None,
                                ) -> tuple[list[RevocationNotice], int]:
        """Notices after ``cursor`` and the next cursor to ask with; ``None``: from now on
        (none returned, only the cursor). Notices are numbered from 1."""
        ...

    async def aclose(self) -> None: ...


# -- Redis ----------------------------------------------------------------------------------------

# Each notice is numbered and pushed in one step, and read with the number it goes with, so a
# reader never sees a number without its notice (two separate commands could interleave with
# another node's and lose one).
_ANNOUNCE = """
local seq = redis.call('INCR', KEYS[1])
redis.call('LPUSH', KEYS[2], cjson.encode({seq = seq, kind = ARGV[1], id = ARGV[2],
                                           at = tonumber(ARGV[3])}))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return seq
"""
_SINCE = """
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local cursor = tonumber(ARGV[1])
if cursor < 0 or latest <= cursor then return {latest} end
local count = math.min(latest - cursor, tonumber(ARGV[2]))
return {latest, redis.call('LRANGE', KEYS[2], 0, count - 1)}
"""


class RedisClusterState:
    """The cluster state in Redis: ``PREFIX:node:ID`` (the record, with a TTL), the set
    ``PREFIX:nodes`` of node ids (cleaned of expired ones as they are read), and the list
    ``PREFIX:revocations`` of notices numbered by ``PREFIX:revocations:seq``."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        import redis.asyncio as aioredis  # noqa: PLC0415 (optional dependency)

        self._redis: Any = aioredis.Redis.from_url(url, socket_timeout=5,
                                                   socket_connect_timeout=5)
        self._prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def publish(self, record: NodeRecord, ttl: float) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key("node", record.node_id), record.to_json(),
                     px=max(1, int(ttl * 1000)))
            pipe.sadd(self._key("nodes"), record.node_id)
            await pipe.execute()

    async def live_nodes(self) -> list[NodeRecord]:
        ids = sorted(m.decode() for m in await self._redis.smembers(self._key("nodes")))
        if not ids:
            return []
        values = await self._redis.mget([self._key("node", i) for i in ids])
        gone = [i for i, v in zip(ids, values, strict=True) if v is None]
        if gone:
            await self._redis.srem(self._key("nodes"), *gone)
        records = (NodeRecord.from_json(v) for v in values if v is not None)
        return [r for r in records if r is not None]

    async def withdraw(self, node_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._key("node", node_id))
            pipe.srem(self._key("nodes"), node_id)
            await pipe.execute()

    async def announce_revocation(self, notice: RevocationNotice) -> None:
        await self._redis.eval(_ANNOUNCE, 2, self._key("revocations", "seq"),
                               self._key("revocations"), notice.kind, notice.credential_id,
                               repr(time.time()), MAX_NOTICES)

    async def revocations_since(self, cursor: int | None,
                                ) -> tuple[list[RevocationNotice], int]:
        answer = await self._redis.eval(_SINCE, 2, self._key("revocations", "seq"),
                                        self._key("revocations"),
                                        -1 if cursor is None else cursor, MAX_NOTICES)
        latest = int(answer[0])
        if cursor is None:
            return [], latest
        notices = []
        for entry in reversed(answer[1] if len(answer) > 1 else []):
            parsed = orjson.loads(entry)
            if parsed["seq"] > cursor:
                notices.append(RevocationNotice(parsed["kind"], parsed["id"]))
        return notices, max(latest, cursor)

    async def aclose(self) -> None:
        await self._redis.aclose()


# -- one machine, no Redis ------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, record BLOB NOT NULL,
                                  expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                                        kind TEXT NOT NULL, id TEXT NOT NULL, at REAL NOT NULL);
"""


class LocalClusterState:
    """The cluster state of the worker processes of one machine: a SQLite file in WAL mode
    (``DIR/cluster.db``), each call a short transaction run in a thread."""

    FILENAME = "cluster.db"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = asyncio.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=5.0,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    async def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await asyncio.to_thread(lambda: self._db.execute(sql, args).fetchall())

    async def publish(self, record: NodeRecord, ttl: float) -> None:
        await self._run("INSERT INTO nodes (node_id, record, expires_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (node_id) DO UPDATE SET record = excluded.record, "
                        "expires_at = excluded.expires_at",
                        (record.node_id, record.to_json(), time.time() + ttl))

    async def live_nodes(self) -> list[NodeRecord]:
        now = time.time()
        await self._run("DELETE FROM nodes WHERE expires_at <= ?", (now - 60,))
        rows = await self._run("SELECT record FROM nodes WHERE expires_at > ? "
                               "ORDER BY node_id", (now,))
        records = (NodeRecord.from_json(row[0]) for row in rows)
        return [r for r in records if r is not None]

    async def withdraw(self, node_id: str) -> None:
        await self._run("DELETE FROM nodes WHERE node_id = ?", (node_id,))

    async def announce_revocation(self, notice: RevocationNotice) -> None:
        now = time.time()
        await self._run("INSERT INTO revocations (kind, id, at) VALUES (?, ?, ?)",
                        (notice.kind, notice.credential_id, now))
        await self._run("DELETE FROM revocations WHERE at < ? OR seq <= "
                        "(SELECT max(seq) FROM revocations) - ?",
                        (now - NOTICE_KEEP_SECONDS, MAX_NOTICES))

    async def revocations_since(self, cursor: int | None,
                                ) -> tuple[list[RevocationNotice], int]:
        rows = await self._run("SELECT coalesce(max(seq), 0) FROM revocations")
        latest = int(rows[0][0])
        if cursor is None or latest <= cursor:
            return [], latest if cursor is None else max(latest, cursor)
        found = await self._run("SELECT kind, id FROM revocations WHERE seq > ? AND seq <= ? "
                                "ORDER BY seq", (cursor, latest))
        return [RevocationNotice(kind, cid) for kind, cid in found], latest

    async def aclose(self) -> None:
        self._db.close()
