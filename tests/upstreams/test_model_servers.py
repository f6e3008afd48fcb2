"""The test model servers speak their backends' wire protocols (checked with a plain client)."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from tests.upstreams.model_servers import OllamaServer, OpenAICompatServer


async def _ollama_stream() -> None:
    async with OllamaServer(model_names=("m1",)) as server, httpx.AsyncClient() as client:
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi there"}]}
        async with client.stream("POST", f"{server.base_url}/api/chat", json=body) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "application/x-ndjson"
            lines = [orjson.loads(line) async for line in resp.aiter_lines() if line]
        assert "".join(x["message"]["content"] for x in lines) == "Echo: hi there"
        assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"
        assert all(x["done"] is False for x in lines[:-1])
        missing = await client.post(f"{server.base_url}/api/chat", json={**body, "model": "x"})
        assert missing.status_code == 404 and missing.json() == {"error": "model 'x' not found"}


def test_ollama_streams_ndjson_and_reports_unknown_models() -> None:
    asyncio.run(_ollama_stream())


async def _openai_stream_with_tools() -> None:
    async with OpenAICompatServer() as server, httpx.AsyncClient() as client:
        body = {"model": "any", "stream": True, "stream_options": {"include_usage": True},
                "tools": [{"type": "function", "function": {"name": "get_weather",
                                                             "parameters": {}}}],
                "messages": [{"role": "user", "content": "weather in both cities?"}]}
        async with client.stream("POST", f"{server.base_url}/v1/chat/completions",
                                 json=body) as resp:
            assert resp.headers["content-type"] == "text/event-stream"
            raw = b"".join([c async for c in resp.aiter_bytes()])
        events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
        assert events[-1] == b"[DONE]"
        chunks = [orjson.loads(e) for e in events[:-1]]
        args: dict[int, str] = {}
        for c in chunks:
            for choice in c["choices"]:
                for call in choice["delta"].get("tool_calls", []):
                    piece = call["function"]["arguments"]
                    args[call["index"]] = args.get(call["index"], "") + piece
        assert args == {0: '{"city":"Paris"}', 1: '{"city":"Tokyo"}'}
        assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


def test_openai_compat_streams_sse_tool_calls_and_usage() -> None:
    asyncio.run(_openai_stream_with_tools())


async def _disconnect() -> None:
    async with OllamaServer(model_names=("m1",), slow=0.05, events=200) as server:
        body = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": "x"}]})
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await reader.readuntil(b"\r\n\r\n")
        await reader.read(100)
        writer.close()
        for _ in range(40):
            if server.disconnects:
                break
            await asyncio.sleep(0.05)
        assert len(server.disconnects) == 1
        assert server.disconnects[0].events_sent < 200


def test_server_records_abandoned_streams() -> None:
    asyncio.run(_disconnect())
