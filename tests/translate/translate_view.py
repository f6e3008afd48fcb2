"""Reduce a client answer (any format) to what the client ends up with, parsing it with the
official SDK types (strictly) on the way."""

from __future__ import annotations

import orjson
import translate_sdk_check as sdk
from translate_cases import View

from tokios_translate import ClientFormat

_CHAT_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
              "content_filter": "content_filter"}
_MSG_STOP = {"end_turn": "end_turn", "max_tokens": "max_tokens", "tool_use": "tool_use",
             "stop_sequence": "stop_sequence", "refusal": "content_filter"}


def client_view(client: ClientFormat, body: bytes) -> View:
    """Parse the answer with the SDK and reduce it to what the client ends up with."""
    if client is ClientFormat.CHAT:
        completion = sdk.chat_completion(body)
        choice = completion.choices[0]
        extra = choice.message.model_extra or {}
        assert completion.usage is not None
        return View(
            text=choice.message.content or "",
            thinking=extra.get("reasoning_content", ""),
            calls=[(c.id, f"custom:{c.custom.name}", {"input": c.custom.input})
                   if c.type == "custom" else
                   (c.id, c.function.name, orjson.loads(c.function.arguments))
                   for c in choice.message.tool_calls or []],
            stop=_CHAT_STOP[choice.finish_reason],
            stop_sequence=None,
            usage=(completion.usage.prompt_tokens, completion.usage.completion_tokens),
        )
    if client is ClientFormat.RESPONSES:
        response = sdk.response(body)
        text, thinking, calls = "", "", []
        for item in response.output:
            if item.type == "message":
                text += "".join(c.text for c in item.content if c.type == "output_text")
            elif item.type == "reasoning":
                thinking += "".join(s.text for s in item.summary)
            elif item.type == "function_call":
                name = f"{item.namespace}/{item.name}" if item.namespace else item.name
                calls.append((item.call_id, name, orjson.loads(item.arguments)))
            elif item.type == "custom_tool_call":
                name = f"{item.namespace}/{item.name}" if item.namespace else item.name
                calls.append((item.call_id, f"custom:{name}", {"input": item.input}))
        if response.status == "incomplete":
            assert response.incomplete_details is not None
            stop = {"max_output_tokens": "max_tokens",
                    "content_filter": "content_filter"}[response.incomplete_details.reason or ""]
        else:
            stop = "tool_use" if calls else "end_turn"  # a custom call counts as a call
        assert response.usage is not None
        return View(text=text, thinking=thinking, calls=calls, stop=stop, stop_sequence=None,
                    usage=(response.usage.input_tokens, response.usage.output_tokens))
    message = sdk.message(body)
    text, thinking, calls = "", "", []
    for block in message.content:
        if block.type == "text":
            text += block.text
        elif block.type == "thinking":
            thinking += block.thinking
        elif block.type == "tool_use":
            calls.append((block.id, block.name, block.input))
    return View(text=text, thinking=thinking, calls=calls,
                stop=_MSG_STOP[message.stop_reason or ""], stop_sequence=message.stop_sequence,
                usage=(message.usage.input_tokens, message.usage.output_tokens))
