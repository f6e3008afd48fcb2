"""Revocation notices: a change made through one node is applied by every node at once.

A node that revokes a key, connector token or admin key through the admin HTTP API (or changes
anything else there) announces it in the cluster state (Redis with ``--redis``, else the
workers' ``cluster.db``); ``tokios-gateway key revoke`` and the other CLI commands announce it
too when they are given Redis (``TOKIOS_REDIS`` or the config file's ``redis``). Every node
follows the notices::

    follower = NoticeFollower(state, on_notice)   # on_notice(notice) on the event loop
    follower.start()                              # polls every NOTICE_POLL_INTERVAL
    await follower.aclose()

    await announce(state, RevocationNotice("key", key_id))      # after a change made here

and on each one drops its cached credentials and settings and, for a connector token, closes
that token's tunnels (GOAWAY(REJECTED, "revoked")). Notices only make it sooner: each node
also reads the store (credentials cached at most a second, live tunnels' tokens checked every
second), so a lost notice, or a revocation made with the store alone, still bites within about
a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from runtimes.cluster.state import ClusterState, RedisClusterState, RevocationNotice

__all__ = ["CHANGE", "NOTICE_POLL_INTERVAL", "NoticeFollower", "announce", "announce_once",
           "notice_for"]

logger = logging.getLogger("tokios.gateway")

#: Seconds between two reads of the notices (one small read of Redis or the file).
NOTICE_POLL_INTERVAL = 0.2
#: The kind of a notice that says only "something changed: forget what you cached".
CHANGE = "change"
#: Seconds the CLI gives Redis to take a notice.
CLI_ANNOUNCE_TIMEOUT = 3.0
#: Kinds a node acts on; another kind (from a newer gateway) is treated as CHANGE.
KINDS = frozenset({"key", "connector_token", "admin_key", CHANGE})


def notice_for(kind: str, credential_id: str = "") -> RevocationNotice:
    """The notice for a revocation of ``kind`` (``key``, ``connector_token``, ``admin_key``)
    of ``credential_id``, or for any other change (CHANGE)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    return RevocationNotice(kind, credential_id)


async def announce(state: ClusterState, notice: RevocationNotice) -> bool:
    """Tell every node; False (and a warning) when the cluster state cannot be reached: the
    store still makes the change bite within about a second."""
    try:
        await state.announce_revocation(notice)
    except Exception as exc:  # Redis down, file locked: the store is the guarantee
        logger.warning("could not announce a %s change to the other nodes (%s); they see it "
                       "within about a second", notice.kind, type(exc).__name__)
        return False
    return True


def announce_once(redis_url: str, notice: RevocationNotice, *,
                  timeout: float = CLI_ANNOUNCE_TIMEOUT) -> bool:
    """:func:`announce` from a process without an event loop (the CLI), through Redis."""

    async def main() -> bool:
        state = RedisClusterState(redis_url)
        try:
            async with asyncio.timeout(timeout):
                return await announce(state, notice)
        except TimeoutError:
            logger.warning("could not announce a %s change to the other nodes (Redis did not "
                           "answer within %g s); they see it within about a second",
                           notice.kind, timeout)
            return False
        finally:
            await state.aclose()

    return asyncio.run(main())


class NoticeFollower:
    """Reads the notices other nodes (and the CLI) announce and hands each to ``on_notice``,
    in order, once. Start with :meth:`start` on the event loop; stop with :meth:`aclose`."""

    def __init__(self, state: ClusterState, on_notice: Callable[[RevocationNotice], None], *,
                 interval: float = NOTICE_POLL_INTERVAL) -> None:
        self._state = state
        self._on_notice = on_notice
        self._interval = interval
        self._cursor: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def poll(self) -> int:
        """Read the notices since the last poll (the first poll only sets the cursor) and
        act on them; how many."""
        notices, self._cursor = await self._state.revocations_since(self._cursor)
        for announced in notices:
            notice = announced if announced.kind in KINDS else RevocationNotice(CHANGE, "")
            try:
                self._on_notice(notice)
            except Exception:
                logger.exception("acting on a %s notice failed", notice.kind)
        return len(notices)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revocation-notices")

    async def _run(self) -> None:
        failing = False
        while not self._stopped:
            try:
                await self.poll()
                failing = False
            except Exception as exc:
                if not failing:  # once per outage, not every poll
                    logger.warning("cannot read revocation notices (%s); the store's checks "
                                   "still apply", type(exc).__name__)
                failing = True
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        """Stop following. Bounded: a Redis client that swallows the cancellation of a command
        in flight still sees ``_stopped`` after it."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=CLI_ANNOUNCE_TIMEOUT + 5)
