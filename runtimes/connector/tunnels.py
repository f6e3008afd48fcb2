"""How one connector holds several tunnels (``--tunnels N``, ``--gateway URL`` repeated), for
both shells (asyncio ``app``, ``threaded``): which address each tunnel dials, whether a tunnel
that came up is kept or closed because it ends on a gateway node another tunnel of this
connector already holds, and how long each tunnel waits before dialling again. No I/O, no
clock, no threads: times are passed in, and a threaded shell passes a lock as ``guard``.

A shell runs one loop per :class:`TunnelSlot` of a :class:`TunnelPlan`; each turn of it is
one session (``runtimes.connector.session.SessionEvents`` calls the plan for it)::

    url = plan.url_for(slot)            # dial it; a dial that failed: slot.after_dial_failure
    # Accepted  -> plan.accepted(slot, session, node_id): KEEP, or SAME_NODE (the session
    #              sends GOAWAY and ends; the loop dials again after plan.after_session)
    # GOAWAY    -> the node drains: the loop dials a replacement now, while the old session
    #              finishes its streams (make before break)
    # the end   -> plan.ended(session)
    delay = plan.after_session(slot, session, now)   # PermanentRejection: stop for good

A gateway node names itself in WELCOME (``node_id``); a gateway of one process does not, and
then N tunnels to it are all kept (still useful: a tunnel that drops leaves the others).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import ssl
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from runtimes.connector.handling import Backoff
from runtimes.connector.settings import PermanentRejection, session_outcome
from tokios_proto import Rejected

__all__ = [
    "DEFAULT_TUNNELS",
    "MAX_GATEWAYS",
    "MAX_SAME_NODE_DIALS",
    "MAX_TUNNELS",
    "HoldsTunnels",
    "Reconnect",
    "SessionEnd",
    "TunnelPlan",
    "TunnelSlot",
    "Verdict",
    "dial_failure",
]

#: ``tokios-connector --tunnels``: its default and its ceiling.
DEFAULT_TUNNELS = 2
MAX_TUNNELS = 8
#: At most this many ``--gateway`` addresses.
MAX_GATEWAYS = 16
#: Dials in a row that may land on a node another tunnel holds before a tunnel keeps one there
#: anyway (one gateway address in front of fewer nodes than tunnels cannot do better).
MAX_SAME_NODE_DIALS = 4
#: The wait before dialling again after landing on a held node: n-th time in a row, uniform in
#: [1/2, 1) x min(SAME_NODE_CAP, SAME_NODE_BASE x 2**(n-1)) seconds.
SAME_NODE_BASE = 0.2
SAME_NODE_CAP = 2.0

logger = logging.getLogger("tokios.connector")


class Verdict(enum.Enum):
    """What to do with a tunnel the gateway just accepted."""

    KEEP = "keep"
    #: It ends on a node another tunnel holds: close it politely (GOAWAY) and dial again.
    SAME_NODE = "same_node"


class SessionEnd(Protocol):
    """How a session ended, as the plan reads it (``SessionEvents`` has these)."""

    rejected: Rejected | None
    revoked: bool
    #: It landed on a node another tunnel held, and was closed for that.
    same_node: bool
    #: The gateway sent GOAWAY(NO_ERROR) after accepting it: the node drains.
    drained: bool


class Reconnect:
    """When one tunnel dials the gateway again.

    After a session (:meth:`after_session`) or a dial that failed (:meth:`after_dial_failure`)
    the shell waits the returned number of seconds, then dials. The wait is the gateway's
    ``retry_after`` when its rejection carried one, PLUS the full-jitter back-off delay
    (:class:`~runtimes.connector.handling.Backoff`): the gateway's figure is a minimum, and
    the jitter on top spreads the connectors it turned away so they do not all come back at
    the same instant. A permanent rejection (bad or revoked token, deployments not allowed,
    another protocol version) raises PermanentRejection instead: retrying cannot help.
    """

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def after_session(self, session: SessionEnd, now: float) -> float:
        """Seconds to wait after ``session`` ended (PermanentRejection: stop for good)."""
        try:
            retry_after = session_outcome(session.rejected, session.revoked)
        except PermanentRejection as exc:
            logger.error("%s", exc)
            raise
        return self._delay(retry_after or 0.0, now)

    def after_dial_failure(self, exc: BaseException, now: float) -> float:
        """Seconds to wait after dialling failed with ``exc`` (logged without secrets)."""
        logger.warning("%s", dial_failure(exc))
        return self._delay(0.0, now)

    def _delay(self, retry_after: float, now: float) -> float:
        self.backoff.disconnected(now)
        delay = retry_after + self.backoff.next_delay()
        logger.info("reconnecting in %.2fs", delay)
        return delay


def dial_failure(exc: BaseException) -> str:
    """Why dialling the gateway failed, for the log (no secret in it)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"cannot reach the gateway: its TLS certificate is not trusted "
                f"({exc.verify_message}); check --ca-file")
    strerror = getattr(exc, "strerror", None) or ""
    return f"cannot reach the gateway: {type(exc).__name__} {strerror}".rstrip()


class TunnelSlot:
    """One of the connector's N tunnels: its index, its back-off (``reconnect``), the dials
    made and how many in a row landed on a held node. ``current`` is the shell's live session
    of this slot, if any (not a draining one)."""

    def __init__(self, index: int, reconnect: Reconnect) -> None:
        self.index = index
        self.reconnect = reconnect
        self.dials = 0
        self.same_node = 0
        self.current: object | None = None

    @property
    def backoff(self) -> Backoff:
        return self.reconnect.backoff


class TunnelPlan:
    """The N tunnel slots of a connector and the gateway nodes their sessions hold.

    Each slot has its own full-jitter back-off; ``rng`` returns floats in [0, 1).
    """

    def __init__(self, count: int, urls: Sequence[str], *, rng: Callable[[], float],
                 guard: AbstractContextManager[object] | None = None) -> None:
        if not 1 <= count <= MAX_TUNNELS:
            raise ValueError(f"tunnels must be in 1..{MAX_TUNNELS}")
        if not 1 <= len(urls) <= MAX_GATEWAYS:
            raise ValueError(f"give 1..{MAX_GATEWAYS} gateway addresses")
        self.urls = tuple(urls)
        self.slots = [TunnelSlot(i, Reconnect(Backoff(rng))) for i in range(count)]
        self._rng = rng
        self._guard: AbstractContextManager[object] = guard or contextlib.nullcontext()
        #: session -> the node it ends on (kept sessions with a node id, draining or not).
        self._held: dict[Hashable, str] = {}

    def url_for(self, slot: TunnelSlot) -> str:
        """The address the slot dials next: slot i starts at address i and moves to the next
        one on each dial, so the tunnels start spread and a dead address is not stuck to."""
        url = self.urls[(slot.index + slot.dials) % len(self.urls)]
        slot.dials += 1
        return url

    def held_nodes(self) -> set[str]:
        """The nodes this connector's sessions end on (live or draining)."""
        with self._guard:
            return set(self._held.values())

    def accepted(self, slot: TunnelSlot, session: Hashable, node_id: str) -> Verdict:
        """The gateway accepted ``session`` of ``slot`` on ``node_id`` ("" for a gateway of one
        process): KEEP it, or SAME_NODE when another session of this connector ends on that
        node, up to MAX_SAME_NODE_DIALS times in a row."""
        with self._guard:
            taken = node_id != "" and node_id in self._held.values()
            if taken and slot.same_node < MAX_SAME_NODE_DIALS:
                slot.same_node += 1
                return Verdict.SAME_NODE
            slot.same_node = 0
            if node_id:
                self._held[session] = node_id
            return Verdict.KEEP

    def ended(self, session: Hashable) -> None:
        """``session`` is over (closed, whatever the reason): its node is free again."""
        with self._guard:
            self._held.pop(session, None)

    def after_session(self, slot: TunnelSlot, session: SessionEnd, now: float) -> float:
        """Seconds before ``slot`` dials again once ``session`` let go of it: a short,
        growing wait after landing on a held node; none after a drain (GOAWAY) that follows a
        stable session, so a replacement exists before the node goes; else the back-off.
        Raises PermanentRejection when retrying cannot help."""
        if session.same_node:
            ceiling = min(SAME_NODE_CAP, SAME_NODE_BASE * 2.0 ** max(0, slot.same_node - 1))
            return ceiling * (0.5 + 0.5 * self._rng())
        backoff = slot.backoff
        if session.drained:
            backoff.disconnected(now)
            if backoff.attempt == 0:  # the session was stable: replace it at once
                backoff.attempt = 1   # (a drain again soon after backs off)
                logger.info("tunnel %d: the gateway node drains; dialling a replacement",
                            slot.index)
                return 0.0
        return slot.reconnect.after_session(session, now)


class HoldsTunnels:
    """What both shells' connectors derive from their :class:`TunnelPlan` (``self.plan``)."""

    plan: TunnelPlan

    @property
    def backoff(self) -> Backoff:
        """The first tunnel's back-off (tests tune it)."""
        return self.plan.slots[0].backoff

    @property
    def reconnect(self) -> Reconnect:
        """The first tunnel's reconnect policy."""
        return self.plan.slots[0].reconnect
