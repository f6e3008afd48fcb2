"""What became of one request, judged from what the client received: the chaos suite's verdict.

Every request ends as exactly one :class:`Verdict`:

* ``COMPLETE``: a whole, well-formed answer of the client's format whose text is the text the
  model server produced, nothing lost, nothing doubled;
* ``CLEAN_ERROR``: an error the client's own SDK understands: an HTTP error status with the
  format's error envelope, or a stream that ends with the format's in-stream error (after a
  prefix of the right text) and a proper end of body;
* ``NOT_STARTED``: the connection failed before any byte of an answer (refused, or closed
  before the response head) while the gateway was restarting: nothing was half-answered;
* ``DEFECT``: anything else: a body cut without an error (``truncated``), bytes that do not
  parse as the format (``malformed``), wrong text (``corrupted``), no end within the bound
  (``hung``), a connection lost before the head while the gateway was up (``dropped``).

Use :func:`judge` with what the client saw; it does no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson


class Verdict(enum.Enum):
    COMPLETE = "complete"
    CLEAN_ERROR = "clean error"
    NOT_STARTED = "not started"
    DEFECT = "defect"


class Api(enum.Enum):
    """The client APIs the chaos traffic uses: (path, error envelope, stream framing)."""

    CHAT = "/v1/chat/completions"
    MESSAGES = "/v1/messages"
    RESPONSES = "/v1/responses"
    OLLAMA = "/api/chat"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    #: For errors and defects: a short reason (``truncated``, ``status 502``...).
    detail: str = ""


@dataclass(frozen=True)
class Seen:
    """What the client received for one request."""

    api: Api
    stream: bool
    expected_text: str
    #: None: no response head arrived.
    status: int | None = None
    content_type: str = ""
    body: bytes = b""
    #: The transport error that ended the exchange (its class name), if any.
    failure: str | None = None
    #: True when the failure came before any byte reached the server's socket (refused).
    refused: bool = False
    #: True when the request ran past the suite's bound.
    timed_out: bool = False
    #: True when the gateway was restarting around this request (drops are expected then).
    gateway_restarting: bool = False


def judge(seen: Seen) -> Outcome:
    """The verdict for one request (see module doc)."""
    if seen.timed_out:
        return Outcome(Verdict.DEFECT, "hung")
    if seen.status is None:
        if seen.refused or seen.gateway_restarting:
            return Outcome(Verdict.NOT_STARTED, seen.failure or "no answer")
        return Outcome(Verdict.DEFECT, f"dropped before the head ({seen.failure})")
    if seen.failure is not None:
        return Outcome(Verdict.DEFECT, f"truncated ({seen.failure})")
    if seen.status >= 400:
        return _judge_error_body(seen)
    if seen.status != 200:
        return Outcome(Verdict.DEFECT, f"unexpected status {seen.status}")
    try:
        text, error = (_stream_text(seen) if seen.stream else (_whole_text(seen), None))
    except _Malformed as exc:
        return Outcome(Verdict.DEFECT, f"malformed ({exc})")
    if error is not None:
        if not seen.expected_text.startswith(text):
            return Outcome(Verdict.DEFECT, "corrupted before an in-stream error")
        return Outcome(Verdict.CLEAN_ERROR, f"in-stream: {error}")
    if text != seen.expected_text:
        return Outcome(Verdict.DEFECT, f"corrupted ({text[-40:]!r})")
    return Outcome(Verdict.COMPLETE)


class _Malformed(Exception):
    pass


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _Malformed(f"bad JSON {data[:60]!r}") from exc


def _judge_error_body(seen: Seen) -> Outcome:
    if not seen.content_type.startswith("application/json"):
        return Outcome(Verdict.DEFECT, f"status {seen.status} with {seen.content_type!r}")
    try:
        body = _loads(seen.body)
    except _Malformed:
        return Outcome(Verdict.DEFECT, f"status {seen.status} with a body that is not JSON")
    if not _is_error_envelope(seen.api, body):
        return Outcome(Verdict.DEFECT, f"status {seen.status} not in the client's format")
    error = body["error"]
    message = error if isinstance(error, str) else error["message"]
    return Outcome(Verdict.CLEAN_ERROR, f"status {seen.status}: {message[:60]}")


def _is_error_envelope(api: Api, body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    if api is Api.OLLAMA:
        return isinstance(body.get("error"), str)
    error = body.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return False
    if api is Api.MESSAGES:
        return body.get("type") == "error" and isinstance(error.get("type"), str)
    return "type" in error


def _whole_text(seen: Seen) -> str:
    body = _loads(seen.body)
    try:
        if seen.api is Api.CHAT:
            return str(body["choices"][0]["message"]["content"])
        if seen.api is Api.MESSAGES:
            return "".join(b["text"] for b in body["content"] if b["type"] == "text")
        if seen.api is Api.RESPONSES:
            return "".join(part["text"] for item in body["output"] if item["type"] == "message"
                           for part in item["content"] if part["type"] == "output_text")
        return str(body["message"]["content"])
    except (KeyError, IndexError, TypeError) as exc:
        raise _Malformed(f"no {exc} in the answer") from exc


def _sse_events(body: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) per SSE event; the body must end on an event boundary."""
    if body and not body.endswith(b"\n\n"):
        raise _Malformed("the stream ends inside an event")
    events: list[tuple[str | None, bytes]] = []
    for block in body.split(b"\n\n"):
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if name is not None or data:
            events.append((name, b"\n".join(data)))
    return events


def _stream_text(seen: Seen) -> tuple[str, str | None]:
    """(text so far, in-stream error or None) of a stream that must have ended properly."""
    if seen.api is Api.OLLAMA:
        return _ndjson_text(seen.body)
    events = _sse_events(seen.body)
    if not events:
        raise _Malformed("an empty stream")
    if seen.api is Api.CHAT:
        return _chat_text(events)
    if seen.api is Api.MESSAGES:
        return _messages_text(events)
    return _responses_text(events)


def _chat_text(events: list[tuple[str | None, bytes]]) -> tuple[str, str | None]:
    if events[-1][1] != b"[DONE]":
        raise _Malformed("no [DONE] at the end")
    text, error, finished = "", None, False
    for _, data in events[:-1]:
        chunk = _loads(data)
        if "error" in chunk:
            error = chunk["error"].get("type", "?")
            continue
        for choice in chunk.get("choices") or []:
            text += choice.get("delta", {}).get("content") or ""
            finished = finished or choice.get("finish_reason") is not None
    if error is None and not finished:
        raise _Malformed("[DONE] without a finish_reason")
    return text, error


def _messages_text(events: list[tuple[str | None, bytes]]) -> tuple[str, str | None]:
    text = ""
    for name, data in events:
        event = _loads(data)
        if name != event.get("type"):
            raise _Malformed(f"event {name} carries type {event.get('type')}")
        if name == "content_block_delta" and event["delta"]["type"] == "text_delta":
            text += event["delta"]["text"]
    last = events[-1][0]
    if last == "error":
        return text, _loads(events[-1][1])["error"]["type"]
    if last != "message_stop":
        raise _Malformed(f"the stream ends with {last}, not message_stop")
    return text, None


def _responses_text(events: list[tuple[str | None, bytes]]) -> tuple[str, str | None]:
    text = ""
    sequence = -1
    for name, data in events:
        event = _loads(data)
        if name != event.get("type"):
            raise _Malformed(f"event {name} carries type {event.get('type')}")
        if event.get("sequence_number") != sequence + 1:
            raise _Malformed(f"sequence {event.get('sequence_number')} after {sequence}")
        sequence += 1
        if name == "response.output_text.delta":
            text += event["delta"]
    last = events[-1][0]
    if last == "response.failed":
        return text, _loads(events[-1][1])["response"]["error"]["code"]
    if last != "response.completed":
        raise _Malformed(f"the stream ends with {last}, not response.completed")
    return text, None


def _ndjson_text(body: bytes) -> tuple[str, str | None]:
    if not body.endswith(b"\n"):
        raise _Malformed("the stream ends inside a line")
    lines = [_loads(line) for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise _Malformed("an empty stream")
    text = "".join(line.get("message", {}).get("content", "") for line in lines)
    if "error" in lines[-1]:
        return text, str(lines[-1]["error"])[:60]
    if lines[-1].get("done") is not True:
        raise _Malformed("the last line is not done: true")
    return text, None
