"""Model servers for tests and benchmarks that speak the backends' real wire protocols.

Two servers, both real HTTP/1.1 over real sockets (h11 does the framing, chunked like Go's
net/http and llama.cpp's httplib):

* :class:`OllamaServer` - Ollama's native API: ``POST /api/chat`` and ``POST /api/generate``
  (NDJSON stream or one JSON object), ``POST /api/embed``, ``GET /api/tags``,
  ``GET /api/version``.
* :class:`OpenAICompatServer` - the OpenAI-compatible API that llama.cpp's ``llama-server``,
  vLLM and LM Studio serve: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (SSE
  ending in ``data: [DONE]``), ``POST /v1/embeddings``, ``GET /v1/models``, plus llama.cpp's
  ``GET /props``, ``/health`` and native ``POST /infill`` (fill-in-the-middle).

The answers are scripted, deterministic and depend on the prompt, so end-to-end tests can assert
exact content:

* the reply text is ``"Echo: " + last user text``, streamed one word per event (for a prompt,
  ``"Echo: " + prompt``, then ``"<FIM> " + suffix`` when a suffix came);
* if the request offers tools and the last user text mentions "weather", the model calls the
  first tool with ``{"city": "Paris"}`` (two calls when it mentions "both");
* if thinking is requested (Ollama ``think``; ``reasoning_effort`` or
  ``chat_template_kwargs.enable_thinking`` for llama.cpp/vLLM), a reasoning part
  ``"Let me think."`` comes first, in the backend's own reasoning field;
* a last user text containing "upstream-error" gets HTTP 500 before streaming, and
  "midstream-error" gets an error after the first event;
* ``slow`` (seconds between events) and ``events`` (count) stretch the stream, so cancellation
  can be observed: :attr:`disconnects` records each stream the client abandoned;
* ``cut_after`` (events) drops the connection in the middle of each streamed body, without
  its last chunk, as a model server that crashes does;
* ``first_delay`` (seconds) holds every POST before its answer starts, head included, as a big
  model's prompt processing does (an error status then comes after the delay too); a client
  that goes away meanwhile is recorded in :attr:`disconnects` (with 0 events sent);
* ``error_status`` answers every POST with that HTTP status and the backend's own error body
  (a model server that cannot load its model: 503 before any byte of an answer);
* ``stall_after`` (events) stops a stream after that many events and sends nothing more,
  without closing (a model hung mid-answer); the client leaving is recorded;
* every POST's path is in :attr:`paths` as it arrives (a count of what reached the model).

Every request's decoded JSON body is kept in :attr:`requests`. A test may replace the script:
set :attr:`_BaseServer.script` to a function ``(body, thinking_requested, events) -> Script``
(tests/agents scripts agentic tool loops that way); the wire format stays the backend's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import orjson

MAX_BODY = 64 * 1024 * 1024

#: The reader of the connection being served (each connection runs in its own task).
_current_reader: contextvars.ContextVar[asyncio.StreamReader] = contextvars.ContextVar("reader")


@dataclass
class Disconnect:
    """A stream the client abandoned before it ended."""

    path: str
    events_sent: int
    at: float


@dataclass
class _Script:
    text_words: list[str]
    tool_calls: list[tuple[str, dict[str, Any]]]
    thinking: str | None
    error_status: int | None
    midstream_error: bool


#: What a server answers: the words of its text, its tool calls, its reasoning, its failures.
Script = _Script


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                part.get("text", "") for part in content if isinstance(part, dict)
            )
    return ""


def _script(body: dict[str, Any], thinking_requested: bool, events: int) -> _Script:
    text = _last_user_text(body.get("messages") or [])
    tools = body.get("tools") or []
    calls: list[tuple[str, dict[str, Any]]] = []
    if tools and "weather" in text:
        name = tools[0]["function"]["name"]
        calls.append((name, {"city": "Paris"}))
        if "both" in text:
            calls.append((name, {"city": "Tokyo"}))
    words = f"Echo: {text}".split(" ")
    if events > len(words):
        words = words + [f"w{i}" for i in range(events - len(words))]
    words = [w + " " for w in words[:-1]] + [words[-1]]
    return _Script(
        text_words=[] if calls else words,
        tool_calls=calls,
        thinking="Let me think." if thinking_requested else None,
        error_status=500 if "upstream-error" in text else None,
        midstream_error="midstream-error" in text,
    )


@dataclass
class _BaseServer:
    """An HTTP/1.1 server on 127.0.0.1 with an ephemeral port. Use ``async with``."""

    slow: float = 0.0
    events: int = 0
    first_delay: float = 0.0
    #: After this many events of a stream, the connection is dropped mid-body.
    cut_after: int | None = None
    #: Answer every POST with this status and the backend's error body.
    error_status: int | None = None
    #: After this many events of a stream, send nothing more (and keep the connection).
    stall_after: int | None = None
    model_names: tuple[str, ...] = ("llama3.2:1b",)
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    #: The path of every other request (GET: probes, the connector's health checks).
    gets: list[str] = field(default_factory=list)
    disconnects: list[Disconnect] = field(default_factory=list)
    #: Replaces the default script: ``(body, thinking_requested, events) -> Script``.
    script: Callable[[dict[str, Any], bool, int], _Script] | None = None
    connections_accepted: int = 0
    #: POST requests being answered now, and the most at once (for concurrency tests).
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _server: asyncio.base_events.Server | None = None
    _connections: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> _BaseServer:
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop_listening(self) -> None:
        """The model server goes down: its port refuses connections and the connections it
        had are dropped (until :meth:`listen_again`)."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def listen_again(self) -> None:
        """Back up, on the same port."""
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1",
                                                  self.port, reuse_address=True)

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # streams still being written (a dead client): abort their sockets, so each handler
        # ends at its next step (cancelling the tasks trips Python 3.11's StreamReaderProtocol)
        for writer in list(self._writers):
            writer.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self._connections,
                                                  return_exceptions=True), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections_accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        self._writers.add(writer)
        _current_reader.set(reader)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    return
                post = request.method == b"POST"
                (self.paths if post else self.gets).append(request.target.decode())
                self.in_flight += post
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    if self.first_delay and post and not await self._think(
                            reader, request.target.decode(), self.first_delay):
                        return
                    if self.error_status is not None and post:
                        await self._send_json(conn, writer, self.error_status,
                                              self._error_body(self.error_status))
                    else:
                        await self._dispatch(conn, writer, request, body)
                finally:
                    self.in_flight -= post
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _think(self, reader: asyncio.StreamReader, path: str, seconds: float) -> bool:
        """Hold the answer ``seconds`` (prompt processing); False, with the disconnect
        recorded, if the client went away meanwhile (clients do not pipeline: any read that
        completes is EOF or a reset), as a real server notices a dropped connection."""
        gone = asyncio.ensure_future(reader.read(1))
        try:
            done, _ = await asyncio.wait([gone], timeout=seconds)
        finally:
            gone.cancel()  # and wait until it let go of the reader: the next read is ours
            await asyncio.gather(gone, return_exceptions=True)
        if done:
            self.disconnects.append(Disconnect(path, 0, time.monotonic()))
            return False
        return True

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("body too large")
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, conn: h11.Connection, event: Any) -> None:
        data = conn.send(event)
        if data:
            writer.write(data)
            await writer.drain()

    async def _send_json(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, obj: Any
    ) -> None:
        body = orjson.dumps(obj)
        headers = [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        await self._send(writer, conn, h11.Response(status_code=status, headers=headers))
        await self._send(writer, conn, h11.Data(data=body))
        await self._send(writer, conn, h11.EndOfMessage())

    async def _stream(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        path: str,
        content_type: str,
        chunks: list[bytes],
        *,
        error_after_first: bytes | None = None,
    ) -> None:
        headers = [("Content-Type", content_type), ("Transfer-Encoding", "chunked")]
        await self._send(writer, conn, h11.Response(status_code=200, headers=headers))
        sent = 0
        # Clients do not pipeline, so any read completing during the stream means EOF or reset:
        # the client abandoned the stream (what a real server notices as a broken connection).
        client_gone = asyncio.ensure_future(_current_reader.get().read(1))
        try:
            for chunk in chunks:
                if self.cut_after is not None and sent >= self.cut_after:
                    writer.transport.abort()  # a crashed model server: no last chunk
                    return
                if self.stall_after is not None and sent >= self.stall_after:
                    await client_gone  # a hung model: nothing more until the client leaves
                    raise ConnectionResetError
                await self._send(writer, conn, h11.Data(data=chunk))
                sent += 1
                if error_after_first is not None:
                    await self._send(writer, conn, h11.Data(data=error_after_first))
                    break
                if self.slow:
                    await asyncio.sleep(self.slow)
                if client_gone.done() or writer.transport.is_closing():
                    raise ConnectionResetError
            await self._send(writer, conn, h11.EndOfMessage())
        except (ConnectionError, RuntimeError):
            self.disconnects.append(Disconnect(path, sent, time.monotonic()))
            raise ConnectionResetError from None
        finally:
            client_gone.cancel()  # and wait until it let go of the reader (keep-alive reads)
            await asyncio.gather(client_gone, return_exceptions=True)

    async def _dispatch(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _error_body(self, status: int) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError


class OllamaServer(_BaseServer):
    """Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/tags``...), byte for byte."""

    def _error_body(self, status: int) -> dict[str, Any]:
        return {"error": "model runner has unexpectedly stopped" if status >= 500 else
                "invalid request"}

    async def _dispatch(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        path = request.target.decode().split("?")[0]
        if request.method == b"GET" and path == "/api/version":
            await self._send_json(conn, writer, 200, {"version": "0.12.6"})
            return
        if request.method == b"GET" and path == "/api/tags":
            models = [
                {
                    "name": name, "model": name, "modified_at": "2025-07-07T20:22:19.123Z",
                    "size": 1321098329, "digest": "a" * 64,
                    "details": {"format": "gguf", "family": "llama", "families": ["llama"],
                                "parameter_size": "1.2B", "quantization_level": "Q8_0"},
                }
                for name in self.model_names
            ]
            await self._send_json(conn, writer, 200, {"models": models})
            return
        if request.method != b"POST" or path not in ("/api/chat", "/api/embed", "/api/generate"):
            await self._send_json(conn, writer, 404, {"error": "404 page not found"})
            return
        payload = orjson.loads(body)
        self.requests.append(payload)
        model = payload.get("model", "")
        if model not in self.model_names:
            await self._send_json(conn, writer, 404, {"error": f"model '{model}' not found"})
            return
        if path == "/api/embed":
            inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
            vectors = [[round(len(text) / 10, 3), 0.5, -0.25] for text in inputs]
            await self._send_json(conn, writer, 200, {
                "model": model, "embeddings": vectors, "total_duration": 14143917,
                "load_duration": 1019500, "prompt_eval_count": sum(len(t) // 4 for t in inputs),
            })
            return
        if path == "/api/generate":
            await self._generate(conn, writer, path, payload)
            return
        script = (self.script or _script)(payload, bool(payload.get("think")), self.events)
        if script.error_status:
            await self._send_json(conn, writer, script.error_status,
                                  {"error": "model runner has unexpectedly stopped"})
            return
        created = "2025-07-07T20:22:19.184789Z"
        lines: list[dict[str, Any]] = []
        if script.thinking:
            lines.append({"role": "assistant", "content": "", "thinking": script.thinking})
        for word in script.text_words:
            lines.append({"role": "assistant", "content": word})
        if script.tool_calls:
            lines.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": f"call_{i:08x}", "function": {"index": i, "name": name, "arguments": args}}
                for i, (name, args) in enumerate(script.tool_calls)
            ]})
        prompt_tokens = len(orjson.dumps(payload.get("messages"))) // 4
        final = {
            "model": model, "created_at": created,
            "message": {"role": "assistant", "content": ""}, "done": True,
            "done_reason": "length" if "limit-me" in _last_user_text(payload["messages"])
            else "stop",
            "total_duration": 182242375, "load_duration": 41295167,
            "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 24573166,
            "eval_count": len(lines), "eval_duration": 115959084,
        }
        if payload.get("stream", True):
            chunks = [
                orjson.dumps({"model": model, "created_at": created, "message": m, "done": False})
                + b"\n"
                for m in lines
            ]
            chunks.append(orjson.dumps(final) + b"\n")
            error = b'{"error":"an error was encountered while running the model"}\n'
            await self._stream(conn, writer, path, "application/x-ndjson", chunks,
                               error_after_first=error if script.midstream_error else None)
            return
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(script.text_words)}
        if script.thinking:
            message["thinking"] = script.thinking
        if script.tool_calls:
            message["tool_calls"] = lines[-1]["tool_calls"]
        await self._send_json(conn, writer, 200, {**final, "message": message})


    async def _generate(self, conn: h11.Connection, writer: asyncio.StreamWriter, path: str,
                        payload: dict[str, Any]) -> None:
        """``/api/generate``: NDJSON ``response`` chunks (or one object); ``context`` only when
        the prompt went through the template (not ``raw``)."""
        model = payload["model"]
        script = _prompt_script(payload, bool(payload.get("think")), self.events)
        if script.error_status:
            await self._send_json(conn, writer, script.error_status,
                                  {"error": "model runner has unexpectedly stopped"})
            return
        created = "2025-07-07T20:22:19.184789Z"
        final: dict[str, Any] = {
            "model": model, "created_at": created, "response": "", "done": True,
            "done_reason": "length" if "limit-me" in payload.get("prompt", "") else "stop",
        }
        if not payload.get("raw"):
            final["context"] = [105, 2364, 107]
        final.update({
            "total_duration": 182242375, "load_duration": 41295167,
            "prompt_eval_count": len(payload.get("prompt", "")) // 4 + 1,
            "prompt_eval_duration": 24573166,
            "eval_count": len(script.text_words), "eval_duration": 115959084,
        })
        if payload.get("stream", True):
            chunks = []
            if script.thinking:
                chunks.append({"model": model, "created_at": created, "response": "",
                               "thinking": script.thinking, "done": False})
            chunks.extend({"model": model, "created_at": created, "response": word,
                           "done": False} for word in script.text_words)
            chunks.append(final)
            error = b'{"error":"an error was encountered while running the model"}\n'
            await self._stream(conn, writer, path, "application/x-ndjson",
                               [orjson.dumps(c) + b"\n" for c in chunks],
                               error_after_first=error if script.midstream_error else None)
            return
        whole = {**final, "response": "".join(script.text_words)}
        if script.thinking:
            whole = {**whole, "thinking": script.thinking}
        await self._send_json(conn, writer, 200, whole)


def _prompt_script(body: dict[str, Any], thinking_requested: bool, events: int) -> _Script:
    """The script of a prompt request (``/api/generate``, ``/v1/completions``): the reply is
    ``"Echo: " + prompt``, and ``" <FIM> " + suffix`` when a suffix came."""
    prompt = body.get("prompt", "")
    text = prompt if isinstance(prompt, str) else " ".join(prompt)
    suffix = body.get("suffix")
    script = _script({"messages": [{"role": "user", "content": text}]}, thinking_requested,
                     events)
    if suffix:
        script.text_words = [*script.text_words[:-1], script.text_words[-1] + " ", "<FIM> ",
                             suffix]
    return script


class OpenAICompatServer(_BaseServer):
    """The OpenAI-compatible API of llama.cpp / vLLM / LM Studio (``/v1/chat/completions`` SSE).

    ``reasoning_field`` picks the backend's dialect: ``reasoning_content`` (llama.cpp),
    ``reasoning`` (vLLM, LM Studio).
    """

    reasoning_field: str = "reasoning_content"

    def _error_body(self, status: int) -> dict[str, Any]:
        if status == 503:  # llama-server while it loads its model
            return {"error": {"code": 503, "message": "Loading model",
                              "type": "unavailable_error"}}
        return {"error": {"code": status, "message": "Internal server error",
                          "type": "server_error"}}

    async def _dispatch(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        path = request.target.decode().split("?")[0]
        if request.method == b"GET" and path == "/health":
            await self._send_json(conn, writer, 200, {"status": "ok"})
            return
        if request.method == b"GET" and path == "/props":
            await self._send_json(conn, writer, 200, {"n_ctx": 8192, "chat_template": "",
                                                      "build_info": "b1-test"})
            return
        if request.method == b"GET" and path == "/v1/models":
            data = [{"id": name, "object": "model", "created": 1735000000, "owned_by": "llamacpp"}
                    for name in self.model_names]
            await self._send_json(conn, writer, 200, {"object": "list", "data": data})
            return
        if request.method != b"POST" or path not in (
                "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/infill"):
            await self._send_json(conn, writer, 404, {"error": {
                "code": 404, "message": "File Not Found", "type": "not_found_error"}})
            return
        payload = orjson.loads(body)
        self.requests.append(payload)
        model = payload.get("model", "")
        if path == "/v1/completions":
            await self._completions(conn, writer, path, payload)
            return
        if path == "/infill":
            await self._infill(conn, writer, path, payload)
            return
        if path == "/v1/embeddings":
            inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
            data = [{"object": "embedding", "index": i,
                     "embedding": [round(len(text) / 10, 3), 0.5, -0.25]}
                    for i, text in enumerate(inputs)]
            tokens = sum(len(t) // 4 for t in inputs)
            await self._send_json(conn, writer, 200, {
                "object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
            return
        # llama.cpp and vLLM take either reasoning_effort or the chat template's switch.
        template_kwargs = payload.get("chat_template_kwargs") or {}
        thinking = bool(payload.get("reasoning_effort") or template_kwargs.get("enable_thinking"))
        script = (self.script or _script)(payload, thinking, self.events)
        if script.error_status:
            await self._send_json(conn, writer, script.error_status, {"error": {
                "code": 500, "message": "Internal server error", "type": "server_error"}})
            return
        cid, created = "chatcmpl-upstream1", 1735000000
        prompt_tokens = len(orjson.dumps(payload.get("messages"))) // 4
        finish = "tool_calls" if script.tool_calls else (
            "length" if "limit-me" in _last_user_text(payload["messages"]) else "stop")
        completion_tokens = len(script.text_words) + len(script.tool_calls)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if payload.get("stream"):
            await self._stream_chat(conn, writer, path, payload, script, cid, created, model,
                                    finish, usage)
            return
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(script.text_words) or None}
        if script.thinking:
            message[self.reasoning_field] = script.thinking
        if script.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
                for i, (name, args) in enumerate(script.tool_calls)
            ]
        await self._send_json(conn, writer, 200, {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": "b1-test",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        })

    async def _completions(self, conn: h11.Connection, writer: asyncio.StreamWriter, path: str,
                           payload: dict[str, Any]) -> None:
        """llama.cpp's ``/v1/completions``: ``text_completion`` objects, streamed as SSE with
        the finish reason (and llama.cpp's usage) on the last chunk, then ``[DONE]``."""
        script = _prompt_script(payload, False, self.events)
        if script.error_status:
            await self._send_json(conn, writer, script.error_status, {"error": {
                "code": 500, "message": "Internal server error", "type": "server_error"}})
            return
        cid, created, model = "cmpl-upstream1", 1735000000, payload.get("model", "")
        prompt = payload.get("prompt", "")
        finish = "length" if "limit-me" in str(prompt) else "stop"
        prompt_tokens = len(str(prompt)) // 4 + 1
        usage = {"completion_tokens": len(script.text_words), "prompt_tokens": prompt_tokens,
                 "total_tokens": prompt_tokens + len(script.text_words)}

        def obj(text: str, finish_reason: str | None) -> dict[str, Any]:
            return {"choices": [{"text": text, "index": 0, "logprobs": None,
                                 "finish_reason": finish_reason}],
                    "created": created, "model": model, "system_fingerprint": "b1-test",
                    "object": "text_completion", "id": cid}

        if not payload.get("stream"):
            await self._send_json(conn, writer, 200, {
                **obj("".join(script.text_words), finish), "usage": usage})
            return
        chunks = [b"data: " + orjson.dumps(obj(w, None)) + b"\n\n" for w in script.text_words]
        chunks.append(b"data: " + orjson.dumps({**obj("", finish), "usage": usage}) + b"\n\n")
        chunks.append(b"data: [DONE]\n\n")
        error = (b'data: {"error":{"code":500,"message":"generation failed",'
                 b'"type":"server_error"}}\n\n')
        await self._stream(conn, writer, path, "text/event-stream", chunks,
                           error_after_first=error if script.midstream_error else None)

    async def _infill(self, conn: h11.Connection, writer: asyncio.StreamWriter, path: str,
                      payload: dict[str, Any]) -> None:
        """llama.cpp's native ``/infill`` (``input_prefix``, ``input_suffix``): ``content`` and,
        on the last object, ``stop: true``, ``stop_type`` and the counts; streamed as SSE
        without ``[DONE]`` (llama.cpp's native endpoints send none)."""
        script = _prompt_script({"prompt": payload.get("input_prefix", ""),
                                 "suffix": payload.get("input_suffix")}, False, self.events)
        limited = payload.get("n_predict", -1)
        words = script.text_words
        if isinstance(limited, int) and 0 < limited < len(words):
            words = words[:limited]
        prompt_tokens = len(payload.get("input_prefix", "")) // 4 + 1
        final = {"index": 0, "content": "", "tokens": [], "id_slot": 0, "stop": True,
                 "model": payload.get("model", ""), "tokens_predicted": len(words),
                 "tokens_evaluated": prompt_tokens, "generation_settings": {"n_predict":
                                                                             limited},
                 "prompt": "<fim_prefix>...", "has_new_line": False, "truncated": False,
                 "stop_type": "limit" if len(words) < len(script.text_words) else "eos",
                 "stopping_word": "", "tokens_cached": 0,
                 "timings": {"prompt_n": prompt_tokens, "predicted_n": len(words)}}
        if not payload.get("stream"):
            await self._send_json(conn, writer, 200, {**final, "content": "".join(words)})
            return
        chunks = [b"data: " + orjson.dumps({"index": 0, "content": w, "tokens": [],
                                            "stop": False, "id_slot": 0,
                                            "tokens_predicted": i + 1,
                                            "tokens_evaluated": prompt_tokens}) + b"\n\n"
                  for i, w in enumerate(words)]
        chunks.append(b"data: " + orjson.dumps(final) + b"\n\n")
        await self._stream(conn, writer, path, "text/event-stream", chunks)

    async def _stream_chat(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, path: str,
        payload: dict[str, Any], script: _Script, cid: str, created: int, model: str,
        finish: str, usage: dict[str, int],
    ) -> None:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "system_fingerprint": "b1-test",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        chunks = [chunk({"role": "assistant", "content": None})]
        if script.thinking:
            for word in script.thinking.split(" "):
                chunks.append(chunk({self.reasoning_field: word + " "}))
        for word in script.text_words:
            chunks.append(chunk({"content": word}))
        for i, (name, args) in enumerate(script.tool_calls):
            arguments = orjson.dumps(args).decode()
            chunks.append(chunk({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                                 "function": {"name": name, "arguments": ""}}]}))
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                chunks.append(chunk({"tool_calls": [{"index": i,
                                                     "function": {"arguments": piece}}]}))
        chunks.append(chunk({}, finish))
        if (payload.get("stream_options") or {}).get("include_usage"):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "choices": [], "usage": usage}
            chunks.append(b"data: " + orjson.dumps(obj) + b"\n\n")
        chunks.append(b"data: [DONE]\n\n")
        error = (b'data: {"error":{"code":500,"message":"generation failed",'
                 b'"type":"server_error"}}\n\n')
        await self._stream(conn, writer, path, "text/event-stream", chunks,
                           error_after_first=error if script.midstream_error else None)
