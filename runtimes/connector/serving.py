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
    # then, also when the stream was reset: work.usage() for the usage report, and
    # work.upstream_started / first_byte / failure for the metrics (session.finish_stream)

``now`` is the shell's monotonic clock, the one :attr:`StreamWork.deadline` is on. The work
writes into the core (``send_response``, ``send_data`` within the credit, ``end_stream``)
itself and sets :attr:`StreamWork.wrote` when it did (the shell flushes then, and clears
it); the shell serialises calls (the threaded shell holds its core lock) and stops calling
once the stream is reset or the tunnel is gone. Nothing here raises on a failing upstream:
every outcome is an answer in the client's format.

What the work does, by plan (``handling.plan_request``):

- an answer known at once (``plan.immediate``: a refusal, a count): head, body, end;
- a whole answer: the call, the whole answer read (at most ``MAX_UPSTREAM_BODY``) and
  translated (``handling.finish_plan``), then head, body, end;
- a streamed answer: the call first (connect and write: a refused connection is known before
  any byte goes to the client), then the 200 head and ``translator.open()`` as soon as the
  model server's head arrives or ``timing.head_hold`` seconds passed, whichever is first; from
  then until the first token a keep-alive every ``timing.keepalive_interval`` (sent only if
  the credit has room for it); the translated stream, within the credit (no upstream read
  while the credit is spent: backpressure); the end when the translator is done or the
  upstream ends.

Failures and timeouts. Before the response head went out, the answer is a whole error in the
client's format (``handling.failure_answer``; an error status of the model server is its own
error, translated); it carries the retryable header (``runtimes.tunnel.headers``) when the
model server failed before any byte of its answer - refused or dropped the connection, a 5xx
status, nothing before ``timing.first_byte_timeout`` - so the gateway may try another
connector. After the head, it is the format's in-stream error (``translator.fail``). The
clocks (:class:`Timing`): the first byte of the answer's body within ``first_byte_timeout``
of the request (for a whole answer, that is when it is generated); then no gap longer than
``idle_timeout``; the whole answer within ``request_timeout``.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from runtimes.connector import handling
from runtimes.connector.handling import Plan, Route
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
from tokios_translate import ClientResponse, ErrorKind, UpstreamCall, open_stream_translator
from tokios_translate.stream import StreamTranslator

__all__ = ["FIRST_BYTE_TIMEOUT", "HEAD_HOLD", "IDLE_TIMEOUT", "REQUEST_TIMEOUT", "Step",
           "StreamWork", "Timing"]

logger = logging.getLogger("tokios.connector")


#: The defaults of :class:`Timing` (seconds; the connector's options change them).
HEAD_HOLD = 1.0
FIRST_BYTE_TIMEOUT = 600.0
IDLE_TIMEOUT = 120.0
REQUEST_TIMEOUT = 3600.0


class Step(enum.Enum):
    """What the shell does next for a stream (see the module doc)."""

    CALL = "call"
    RECEIVE = "receive"
    CREDIT = "credit"
    DONE = "done"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """The clocks of one stream's answer (seconds), from the connector's settings."""

    #: Between keep-alives while a streamed answer waits for its first token.
    keepalive_interval: float = handling.KEEPALIVE_INTERVAL
    #: How long a streamed answer's head waits for the model server's head.
    head_hold: float = HEAD_HOLD
    #: From the request written to the first byte of the answer's body.
    first_byte_timeout: float = FIRST_BYTE_TIMEOUT
    #: The longest gap between two reads of the answer's body, after its first byte.
    idle_timeout: float = IDLE_TIMEOUT
    #: From the request (its body complete) to the end of the answer.
    request_timeout: float = REQUEST_TIMEOUT


class StreamWork:
    """One stream's answer (see the module doc)."""

    __slots__ = ("_answered", "_called", "_conn", "_ending", "_first_byte_at", "_head",
                 "_head_sent", "_hold_until", "_idle_until", "_keepalive_at", "_log",
                 "_outbox", "_request_until", "_started", "_stream_id", "_timing",
                 "_translator", "_whole", "call", "failure", "first_byte", "plan", "step",
                 "upstream_started", "wrote")

    def __init__(self, conn: ConnectorConnection, stream_id: int, plan: Plan, timing: Timing,
                 now: float, *, request_id: str = "") -> None:
        self._conn = conn
        self._stream_id = stream_id
        self._timing = timing
        self._started = now
        #: Every log line about this stream carries the gateway's request id (at the end of
        #: the message, and as the JSON log's ``request_id`` field).
        self._log = {"request_id": request_id}
        self.plan = plan
        #: When the request was written to the model server (None: not yet, or never).
        self.upstream_started: float | None = None
        #: When the first byte of the model server's answer (its head) arrived.
        self.first_byte: float | None = None
        #: Why the upstream call failed (a metrics label: a ``Failure`` value - connect,
        #: write, closed, protocol, local -, timeout, status, too_large), or None.
        self.failure: str | None = None
        #: The usage of a whole answer translated from the model server's (and whether it is
        #: estimated), once known.
        self._answered: tuple[int, int, bool] | None = None
        #: The upstream call to make when :attr:`step` is CALL.
        self.call: UpstreamCall | None = plan.call
        self.step = Step.CALL
        #: True once the work queued output in the core; the shell resets it when it flushes.
        self.wrote = False
        self._called = False
        self._outbox = Outbox(conn, stream_id)
        self._head_sent = False  # our response head (to the gateway)
        self._ending = False  # everything is in the outbox: end the stream once it is sent
        self._head: ResponseHead | None = None  # the model server's
        #: A whole answer (or an error body) being read, at most MAX_UPSTREAM_BODY bytes.
        self._whole = WholeAnswer(handling.MAX_UPSTREAM_BODY)
        self._translator: StreamTranslator | None = None
        if plan.stream:
            assert plan.context is not None
            self._translator = open_stream_translator(plan.context)
        # the deadlines (the shell's clock), None while they do not apply
        self._request_until = now + timing.request_timeout
        self._first_byte_at: float | None = None
        self._idle_until: float | None = None
        self._hold_until: float | None = None
        self._keepalive_at: float | None = None
        if plan.immediate is not None:
            self._answer(plan.immediate)
        self._advance(now)

    @property
    def stream_id(self) -> int:
        return self._stream_id

    @property
    def deadline(self) -> float | None:
        """When to report ``Received.IDLE`` if the upstream says nothing (None: never)."""
        if self.step is Step.DONE:
            return None
        deadline = self._request_until
        for other in (self._first_byte_at, self._idle_until, self._hold_until,
                      self._keepalive_at):
            if other is not None and other < deadline:
                deadline = other
        return deadline

    # ---- the shell's reports ---------------------------------------------------------------

    def called(self, now: float) -> None:
        """The request was written to the upstream."""
        self._called = True
        self.upstream_started = now
        self._first_byte_at = now + self._timing.first_byte_timeout
        if self._translator is not None:
            self._hold_until = now + self._timing.head_hold
        self._advance(now)

    def received(self, event: UpstreamEvent, now: float) -> None:
        """One event of the upstream's answer (or IDLE: :attr:`deadline` passed)."""
        if isinstance(event, bytes):
            self._first_byte_at = None
            self._idle_until = now + self._timing.idle_timeout
            self._upstream_data(event, now)
        elif isinstance(event, ResponseHead):
            self._upstream_head(event, now)
        elif event is Received.END:
            self._upstream_ended(now)
        else:
            self._tick(now)
        self._advance(now)

    def upstream_failed(self, error: UpstreamError, now: float) -> None:
        """The upstream call failed (not reached, closed, broken)."""
        logger.warning("upstream call failed: %s %s", error, self._log["request_id"],
                       extra=self._log)
        self.failure = error.failure.value
        if self._head is None:  # before any byte of the model server's answer
            message = handling.UNREACHABLE if error.failure is not Failure.PROTOCOL else \
                handling.MALFORMED
            self._fail(ErrorKind.UPSTREAM, message, retryable=True)
        elif error.failure is Failure.PROTOCOL:
            self._fail(ErrorKind.UPSTREAM, handling.MALFORMED, retryable=False)
        else:
            self._fail(ErrorKind.UPSTREAM, handling.CONNECTION_LOST, retryable=False)
        self._advance(now)

    def credit(self, now: float) -> None:
        """The stream's send credit may have grown (a WindowUpdated)."""
        self._advance(now)
        if self.step is Step.RECEIVE and self._idle_until is not None:
            # the upstream was not read while the client was slow: its silence counts anew
            self._idle_until = now + self._timing.idle_timeout

    # ---- the algorithm ---------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        """The deadline passed: a timeout, the end of the head hold, or a keep-alive."""
        timing = self._timing
        if now >= self._request_until:
            self._timeout(handling.took_too_long(timing.request_timeout), retryable=False)
        elif self._first_byte_at is not None and now >= self._first_byte_at:
            self._timeout(handling.no_first_byte(timing.first_byte_timeout), retryable=True)
        elif self._idle_until is not None and now >= self._idle_until:
            self._timeout(handling.went_silent(timing.idle_timeout), retryable=False)
        else:
            if self._hold_until is not None and now >= self._hold_until:
                self._open_stream(now)  # the model server is slow to answer: start anyway
            translator = self._translator
            if self._keepalive_at is not None and now >= self._keepalive_at and translator:
                data = translator.keepalive()
                if data and self._conn.available_to_send(self._stream_id) >= len(data):
                    self._conn.send_data(self._stream_id, data)
                    self.wrote = True
                self._keepalive_at = now + timing.keepalive_interval

    def _timeout(self, message: str, *, retryable: bool) -> None:
        logger.warning("upstream call timed out: %s %s", message, self._log["request_id"],
                       extra=self._log)
        self.failure = "timeout"
        self._fail(ErrorKind.TIMEOUT, message, retryable=retryable)

    def _fail(self, kind: ErrorKind, message: str, *, retryable: bool) -> None:
        """End with an error: a whole answer while no head went out, else in-stream."""
        if self._head_sent:
            assert self._translator is not None
            self._finish_stream(self._translator.fail(message, kind))
        else:
            self._answer(handling.failure_answer(self.plan, kind, message,
                                                 retryable=retryable))

    def _upstream_head(self, head: ResponseHead, now: float) -> None:
        self._head = head
        self.first_byte = now
        if head.status >= 400:
            self.failure = "status"
            self._hold_until = None  # its error answers the request, whole if still possible
        elif self._translator is not None and not self._head_sent:
            self._open_stream(now)

    def _open_stream(self, now: float) -> None:
        """The 200 head and the format's opening; keep-alives until the first token."""
        assert self._translator is not None
        self._hold_until = None
        self._conn.send_response(self._stream_id, 200, handling.stream_headers(self.plan))
        self._head_sent = self.wrote = True
        self._outbox.add(self._translator.open())
        if not self._translator.answering:
            self._keepalive_at = now + self._timing.keepalive_interval

    def _upstream_data(self, chunk: bytes, now: float) -> None:
        translator, head = self._translator, self._head
        assert head is not None
        if translator is not None and head.status < 400:
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
            logger.warning("upstream call failed: %s %s", exc, self._log["request_id"],
                           extra=self._log)
            self.failure = "too_large"
            self._fail(ErrorKind.UPSTREAM, handling.TOO_LARGE, retryable=False)

    def _upstream_ended(self, now: float) -> None:
        head, translator = self._head, self._translator
        assert head is not None
        body = self._whole.body
        if translator is not None and self._head_sent:
            if head.status >= 400:
                self._finish_stream(translator.upstream_error(head.status, body))
            else:
                self._finish_stream(translator.finish())
            return
        # a whole answer, or the model server's error before the stream's head went out
        answer = handling.finish_plan(self.plan, head.status, body)
        if answer.usage is not None:
            self._answered = (answer.usage.input_tokens, answer.usage.output_tokens,
                              answer.usage_estimated)
        if head.status >= 500 and answer.status >= 500:
            answer = handling.marked_retryable(answer)
        self._answer(answer)

    def _answer(self, answer: ClientResponse) -> None:
        """A whole answer: head, body, end."""
        self._conn.send_response(self._stream_id, answer.status,
                                 handling.response_headers(answer))
        self._head_sent = self.wrote = True
        self._outbox.add(answer.body)
        self._ending = True

    def _finish_stream(self, tail: bytes) -> None:
        self._outbox.add(tail)
        self._ending = True

    def _advance(self, now: float) -> None:
        """Send what the credit allows, then pick the next step."""
        if self.step is Step.DONE:
            return
        outbox = self._outbox
        if not outbox.empty:
            self.wrote = True
            if not outbox.send():
                self.step = Step.CREDIT
                return
        if self._ending:
            self._conn.end_stream(self._stream_id)
            self.step = Step.DONE
            self.wrote = True
            logger.info("stream %d %s done in %.3fs %s", self._stream_id,
                        self.plan.route.value, now - self._started, self._log["request_id"],
                        extra=self._log)
        else:
            self.step = Step.RECEIVE if self._called else Step.CALL

    # ---- after the stream ------------------------------------------------------------------

    def usage(self) -> tuple[int, int, bool]:
        """``(input_tokens, output_tokens, estimated)`` for the stream's usage report, at its
        end or at any time before (a stream reset mid-answer counts what was generated):

        - no tokens when the model server was never asked (an answer at once, a refused
          connection) or answered an error status, and for a token count;
        - a streamed answer: the model server's own count once its stream reported it, else
          the translator's estimate (prompt estimate, characters generated / 4);
        - a whole answer: the translated answer's usage, or while it is not complete the
          prompt estimate and no output, estimated.
        """
        plan, head = self.plan, self._head
        if (not self._called or plan.route is Route.COUNT_TOKENS
                or (head is not None and head.status >= 400)):
            return 0, 0, False
        if self._translator is not None:
            usage, estimated = self._translator.usage()
            return usage.input_tokens, usage.output_tokens, estimated
        if self._answered is not None:
            return self._answered
        prompt = plan.context.estimated_input_tokens if plan.context is not None else 0
        return prompt, 0, True

