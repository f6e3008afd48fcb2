"""One stream's answer, without I/O: the connector's per-stream algorithm, for both shells
(asyncio ``app``, ``threaded``), which only move bytes and wait.

A shell makes one :class:`StreamWork` per stream once the request body is complete, then does
what :attr:`StreamWork.step` says and reports back, flushing the tunnel core's output after
each call, until the step is DONE::

    work = StreamWork(conn, stream_id, plan_for(connector, stream), timing, now)
    while (step := work.step) is not Step.DONE:
        if step is Step.CALL:        # connect, write work.call (an upstream_http exchange)
            ...work.called(now), or work.upstream_failed(error, now)
        elif step is Step.RECEIVE:   # read the answer until work.deadline (None: no deadline)
            ...work.received(event, now): a ResponseHead, bytes, Received.END or .IDLE;
            ...or work.upstream_failed(error, now)
        elif step is Step.CREDIT:    # wait for WindowUpdated on this stream (or the tunnel)
            ...work.credit(now)
    # leaving: close the exchange (back to the pool if the answer is complete, else aborted)

``now`` is the shell's monotonic clock, the one :attr:`StreamWork.deadline` is on. The work
writes into the core (``send_response``, ``send_data`` within the credit, ``end_stream``)
itself; the shell serialises calls (the threaded shell holds its core lock) and stops calling
once the stream is reset or the tunnel is gone. Nothing here raises on a failing upstream:
every outcome is an answer in the client's format.

What the work does, by plan (``handling.plan_request``):

- an answer known at once (``plan.immediate``: a refusal, a count): head, body, end;
- a whole answer: call, read the whole answer (at most ``MAX_UPSTREAM_BODY``), translate it
  (``handling.finish_plan``), head, body, end; an upstream that cannot be reached or fails
  before its answer is whole: ``handling.upstream_unreachable``;
- a streamed answer: the 200 head and ``translator.open()`` at once, then the call; until the
  first token a keep-alive every ``timing.keepalive_interval`` (sent only if the credit has
  room for it); the translated stream, within the credit (no upstream read while the credit
  is spent: backpressure); the end when the translator is done or the upstream ends. An error
  status is ``translator.upstream_error``, a failure before the upstream's head
  ``translator.fail(*early_failure(...))``, after it ``fail("upstream connection lost")``.

Reading the upstream, ``timing.read_timeout`` is the longest silence accepted; it ends the
call as a failure above.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from runtimes.connector import handling
from runtimes.connector.handling import Plan
from runtimes.tunnel.credit import Outbox
from runtimes.upstream_http import (
    Failure,
    Received,
    ResponseHead,
    UpstreamError,
    UpstreamEvent,
    WholeAnswer,
)
from tokios_proto import ConnectorConnection
from tokios_translate import ClientResponse, UpstreamCall, open_stream_translator
from tokios_translate.stream import StreamTranslator

__all__ = ["Step", "StreamWork", "Timing"]

logger = logging.getLogger("tokios.connector")


class Step(enum.Enum):
    """What the shell does next for a stream (see the module doc)."""

    CALL = "call"
    RECEIVE = "receive"
    CREDIT = "credit"
    DONE = "done"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """The clocks of one stream's answer, from the connector's settings."""

    #: Seconds between keep-alives while a streamed answer waits for its first token.
    keepalive_interval: float = handling.KEEPALIVE_INTERVAL
    #: The longest silence of the upstream accepted while its answer is read.
    read_timeout: float = 300.0


class StreamWork:
    """One stream's answer (see the module doc)."""

    __slots__ = ("_called", "_conn", "_ending", "_head", "_keepalive_at", "_outbox",
                 "_read_deadline", "_started", "_stream_id", "_timing", "_translator", "_whole",
                 "call", "plan", "step")

    def __init__(self, conn: ConnectorConnection, stream_id: int, plan: Plan, timing: Timing,
                 now: float) -> None:
        self._conn = conn
        self._stream_id = stream_id
        self._timing = timing
        self._started = now
        self.plan = plan
        #: The upstream call to make when :attr:`step` is CALL.
        self.call: UpstreamCall | None = plan.call
        self.step = Step.CALL
        self._called = False
        self._outbox = Outbox(conn, stream_id)
        self._ending = False  # everything is in the outbox: end the stream once it is sent
        self._head: ResponseHead | None = None
        #: A whole answer (or an error body) being read, at most MAX_UPSTREAM_BODY bytes.
        self._whole = WholeAnswer(handling.MAX_UPSTREAM_BODY)
        self._translator: StreamTranslator | None = None
        self._keepalive_at: float | None = None
        self._read_deadline: float | None = None
        if plan.immediate is not None:
            self._answer(plan.immediate)
        elif plan.stream:
            assert plan.context is not None
            self._translator = open_stream_translator(plan.context)
            conn.send_response(stream_id, 200, handling.stream_headers(plan))
            self._outbox.add(self._translator.open())
            self._keepalive_at = now + timing.keepalive_interval
        self._advance(now)

    @property
    def stream_id(self) -> int:
        return self._stream_id

    @property
    def deadline(self) -> float | None:
        """When to report ``Received.IDLE`` if the upstream says nothing (None: never)."""
        keepalive, read = self._keepalive_at, self._read_deadline
        if keepalive is None:
            return read
        return keepalive if read is None else min(keepalive, read)

    # ---- the shell's reports ---------------------------------------------------------------

    def called(self, now: float) -> None:
        """The request was written to the upstream."""
        self._called = True
        self._read_deadline = now + self._timing.read_timeout
        self._advance(now)

    def received(self, event: UpstreamEvent, now: float) -> None:
        """One event of the upstream's answer (or IDLE: :attr:`deadline` passed)."""
        if event is Received.IDLE:
            self._tick(now)
        else:
            self._read_deadline = now + self._timing.read_timeout
            if isinstance(event, ResponseHead):
                self._head = event
            elif event is Received.END:
                self._upstream_ended()
            else:
                assert isinstance(event, bytes)
                self._upstream_data(event)
        self._advance(now)

    def upstream_failed(self, error: UpstreamError, now: float) -> None:
        """The upstream call failed (not reached, closed, broken)."""
        self._fail(error)
        self._advance(now)

    def credit(self, now: float) -> None:
        """The stream's send credit may have grown (a WindowUpdated)."""
        self._advance(now)

    # ---- the algorithm ---------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        logger.warning("upstream call failed: %s", error)
        translator = self._translator
        if translator is None:
            self._answer(handling.upstream_unreachable(self.plan))
        elif self._head is not None and self._head.status < 400:
            self._finish_stream(translator.fail("upstream connection lost"))
        else:
            self._finish_stream(translator.fail(*handling.early_failure(str(error))))

    def _tick(self, now: float) -> None:
        """The deadline passed: a keep-alive is due, or the upstream was silent too long."""
        if self._read_deadline is not None and now >= self._read_deadline:
            self._fail(UpstreamError("upstream read timed out", Failure.LOCAL))
            return
        translator = self._translator
        if self._keepalive_at is not None and now >= self._keepalive_at and translator:
            data = translator.keepalive()
            if data and self._conn.available_to_send(self._stream_id) >= len(data):
                self._conn.send_data(self._stream_id, data)
            self._keepalive_at = now + self._timing.keepalive_interval

    def _upstream_data(self, chunk: bytes) -> None:
        translator, head = self._translator, self._head
        if translator is not None and head is not None and head.status < 400:
            out = translator.feed(chunk)
            if out:
                self._keepalive_at = None  # answering: no keep-alive from now on
                self._outbox.add(out)
            if translator.done:
                self._finish_stream(translator.finish())
            return
        try:  # a whole answer, or an error body
            self._whole.add(chunk)
        except UpstreamError as exc:  # too large
            self._fail(exc)

    def _upstream_ended(self) -> None:
        head, translator = self._head, self._translator
        assert head is not None
        body = self._whole.body
        if translator is None:
            self._answer(handling.finish_plan(self.plan, head.status, body))
        elif head.status >= 400:
            self._finish_stream(translator.upstream_error(head.status, body))
        else:
            self._finish_stream(translator.finish())

    def _answer(self, answer: ClientResponse) -> None:
        """A whole answer: head, body, end."""
        self._conn.send_response(self._stream_id, answer.status,
                                 handling.response_headers(answer))
        self._outbox.add(answer.body)
        self._ending = True

    def _finish_stream(self, tail: bytes) -> None:
        self._outbox.add(tail)
        self._keepalive_at = None
        self._ending = True

    def _advance(self, now: float) -> None:
        """Send what the credit allows, then pick the next step."""
        if self.step is Step.DONE:
            return
        if not self._outbox.send():
            self.step = Step.CREDIT
        elif self._ending:
            self._conn.end_stream(self._stream_id)
            self.step = Step.DONE
            self._keepalive_at = self._read_deadline = None
            logger.info("stream %d %s done in %.3fs", self._stream_id, self.plan.route.value,
                        now - self._started)
        else:
            self.step = Step.RECEIVE if self._called else Step.CALL
