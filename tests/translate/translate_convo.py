"""Test-side builders: one neutral conversation written once, rendered as each client format's
request body, and one neutral backend answer rendered as each upstream codec's response body.

These are deliberately plain (no shared code with the translators) so a bug in a codec cannot
hide in its own test input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tokios_translate import ClientFormat

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"]}
WEATHER = {"name": "get_weather", "description": "Weather for a city", "schema": WEATHER_SCHEMA}
TIME = {"name": "get_time", "description": "Local time", "schema": {"type": "object"}}

# Parts: ("text", s) ("image", b64) ("call", id, name, args) ("result", id, content, is_error)
#        ("thinking", s)
Part = tuple[Any, ...]


@dataclass
class Convo:
    turns: list[tuple[str, list[Part]]]
    system: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)


def _chat_content(parts: list[Part]) -> Any:
    if all(p[0] == "text" for p in parts) and len(parts) == 1:
        return parts[0][1]
    out = []
    for p in parts:
        if p[0] == "text":
            out.append({"type": "text", "text": p[1]})
        else:
            out.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{p[1]}"}})
    return out


def to_chat(c: Convo, **extra: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if c.system is not None:
        messages.append({"role": "system", "content": c.system})
    for role, parts in c.turns:
        if role == "user":
            for p in parts:
                if p[0] == "result":
                    content = p[2] if isinstance(p[2], str) else _chat_content(p[2])
                    messages.append({"role": "tool", "tool_call_id": p[1], "content": content})
            own = [p for p in parts if p[0] in ("text", "image")]
            if own:
                messages.append({"role": "user", "content": _chat_content(own)})
        else:
            msg: dict[str, Any] = {"role": "assistant"}
            thinking = [p[1] for p in parts if p[0] == "thinking"]
            if thinking:
                msg["reasoning_content"] = thinking[0]
            text = "".join(p[1] for p in parts if p[0] == "text")
            calls = [p for p in parts if p[0] == "call"]
            msg["content"] = text if text or not calls else None
            if calls:
                msg["tool_calls"] = [
                    {"id": p[1], "type": "function",
                     "function": {"name": p[2], "arguments": orjson.dumps(p[3]).decode()}}
                    for p in calls
                ]
            messages.append(msg)
    body: dict[str, Any] = {"model": "dep", "messages": messages}
    if c.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["schema"]}}
            for t in c.tools
        ]
    return {**body, **extra}


def _resp_content(parts: list[Part]) -> list[dict[str, Any]]:
    return [
        {"type": "input_text", "text": p[1]} if p[0] == "text"
        else {"type": "input_image", "image_url": f"data:image/png;base64,{p[1]}"}
        for p in parts
    ]


def to_responses(c: Convo, **extra: Any) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for role, parts in c.turns:
        if role == "user":
            for p in parts:
                if p[0] == "result":
                    output = p[2] if isinstance(p[2], str) else _resp_content(p[2])
                    items.append({"type": "function_call_output", "call_id": p[1],
                                  "output": output})
            own = [p for p in parts if p[0] in ("text", "image")]
            if own:
                items.append({"type": "message", "role": "user", "content": _resp_content(own)})
        else:
            for p in parts:
                if p[0] == "thinking":
                    items.append({"type": "reasoning", "id": "rs_x",
                                  "summary": [{"type": "summary_text", "text": p[1]}]})
                elif p[0] == "text":
                    items.append({"type": "message", "role": "assistant", "content": [
                        {"type": "output_text", "text": p[1], "annotations": []}]})
                elif p[0] == "call":
                    items.append({"type": "function_call", "call_id": p[1], "name": p[2],
                                  "arguments": orjson.dumps(p[3]).decode()})
    body: dict[str, Any] = {"model": "dep", "input": items, "store": False}
    if c.system is not None:
        body["instructions"] = c.system
    if c.tools:
        body["tools"] = [{"type": "function", "name": t["name"], "description": t["description"],
                          "parameters": t["schema"]} for t in c.tools]
    return {**body, **extra}


def _block(p: Part) -> dict[str, Any]:
    if p[0] == "text":
        return {"type": "text", "text": p[1]}
    if p[0] == "image":
        return {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                            "data": p[1]}}
    if p[0] == "call":
        return {"type": "tool_use", "id": p[1], "name": p[2], "input": p[3]}
    if p[0] == "thinking":
        return {"type": "thinking", "thinking": p[1], "signature": "sig"}
    content = p[2] if isinstance(p[2], str) else [_block(x) for x in p[2]]
    block = {"type": "tool_result", "tool_use_id": p[1], "content": content}
    if p[3]:
        block["is_error"] = True
    return block


def to_messages(c: Convo, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "dep",
        "max_tokens": 1024,
        "messages": [{"role": role, "content": [_block(p) for p in parts]}
                     for role, parts in c.turns],
    }
    if c.system is not None:
        body["system"] = c.system
    if c.tools:
        body["tools"] = [{"name": t["name"], "description": t["description"],
                          "input_schema": t["schema"]} for t in c.tools]
    return {**body, **extra}


HI_TURNS: list[tuple[str, list[Part]]] = [("user", [("text", "hi")])]

RENDER = {ClientFormat.CHAT: to_chat, ClientFormat.RESPONSES: to_responses,
          ClientFormat.MESSAGES: to_messages}


@dataclass
class Answer:
    """A neutral backend answer."""

    text: str = "Hello!"
    thinking: str | None = None
    calls: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)
    finish: str = "stop"  # stop | length | content_filter
    usage: tuple[int, int] | None = (11, 7)
    matched_stop: str | None = None  # vLLM's choice.stop_reason


def ollama_answer(a: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": a.text}
    if a.thinking:
        message["thinking"] = a.thinking
    if a.calls:
        message["tool_calls"] = [
            {**({"id": cid} if cid else {}), "function": {"index": i, "name": n, "arguments": args}}
            for i, (cid, n, args) in enumerate(a.calls)
        ]
    out: dict[str, Any] = {"model": "qwen3:8b", "created_at": "2026-01-01T00:00:00Z",
                           "message": message, "done": True, "done_reason": a.finish,
                           "total_duration": 1000}
    if a.usage:
        out["prompt_eval_count"], out["eval_count"] = a.usage
    return out


def openai_answer(a: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": a.text or None}
    if a.thinking:
        message["reasoning_content"] = a.thinking
    if a.calls:
        message["tool_calls"] = [
            {**({"id": cid} if cid else {}), "type": "function",
             "function": {"name": n, "arguments": orjson.dumps(args).decode()}}
            for cid, n, args in a.calls
        ]
    finish = "tool_calls" if a.calls and a.finish == "stop" else a.finish
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if a.matched_stop is not None:
        choice["stop_reason"] = a.matched_stop
    out: dict[str, Any] = {"id": "chatcmpl-up", "object": "chat.completion", "created": 5,
                           "model": "qwen3-8b", "choices": [choice]}
    if a.usage:
        out["usage"] = {"prompt_tokens": a.usage[0], "completion_tokens": a.usage[1],
                        "total_tokens": sum(a.usage)}
    return out
