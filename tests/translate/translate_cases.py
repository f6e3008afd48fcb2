"""The feature matrix: every feature × client format × backend codec, as data.

Each :class:`Case` says what the client sends, what the backend answers, what the upstream
request and the client's answer must contain, and its matrix status: ``yes`` (translated),
``dropped`` (accepted, the backend has no equivalent; asserted absent upstream), ``error`` (a
clear error in the client's format) or ``n/a`` (the format cannot express it). docs/translation.md
is generated from these cases (tests/translate/test_translate_matrix_doc.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from translate_convo import (
    PNG,
    TIME,
    WEATHER,
    WEATHER_SCHEMA,
    Answer,
    Convo,
    to_chat,
    to_messages,
    to_responses,
)

from tokios_translate import ClientFormat

CHAT, RESP, MSG = ClientFormat.CHAT, ClientFormat.RESPONSES, ClientFormat.MESSAGES
CLIENTS = (CHAT, RESP, MSG)
BACKENDS = ("ollama", "openai")  # the two upstream codecs (openai = llama.cpp here)

Up = dict[str, Any]


@dataclass
class View:
    """What a client ends up with, whatever its format."""

    text: str
    thinking: str
    calls: list[tuple[str, str, Any]]
    stop: str  # end_turn | max_tokens | tool_use | stop_sequence | content_filter
    stop_sequence: str | None
    usage: tuple[int, int]


@dataclass
class Case:
    feature: str
    client: ClientFormat
    backend: str
    request: dict[str, Any]
    status: str = "yes"
    note: str = ""
    answer: Answer = field(default_factory=Answer)
    check_up: Callable[[Up], None] | None = None
    check_view: Callable[[View], None] | None = None
    #: For ``error`` cases: (status, substring of the message).
    error: tuple[int, str] | None = None
    #: Upstream error status and body, for upstream-error cases.
    upstream_error: tuple[int, bytes] | None = None

    @property
    def name(self) -> str:
        return f"{self.feature}|{self.client.value}|{self.backend}"


def render(client: ClientFormat, c: Convo, **extra: Any) -> dict[str, Any]:
    return {CHAT: to_chat, RESP: to_responses, MSG: to_messages}[client](c, **extra)


HI = Convo(turns=[("user", [("text", "hi")])])


def msgs(up: Up) -> list[dict[str, Any]]:
    return up["messages"]  # type: ignore[no-any-return]


def opts(up: Up, backend: str) -> dict[str, Any]:
    return up.get("options", {}) if backend == "ollama" else up


FEATURES: list[tuple[str, str]] = []  # (feature, description) in table order
BUILDERS: dict[str, Callable[[ClientFormat, str], Case | None]] = {}


def feature(name: str, description: str) -> Callable[[Callable[[ClientFormat, str], Case | None]],
                                                      Callable[[ClientFormat, str], Case | None]]:
    def register(fn: Callable[[ClientFormat, str], Case | None]) -> Any:
        FEATURES.append((name, description))
        BUILDERS[name] = fn
        return fn
    return register


def na(name: str, client: ClientFormat, backend: str, note: str) -> Case:
    return Case(name, client, backend, {}, status="n/a", note=note)


# -- system, turns, content -------------------------------------------------------------------

@feature("system-string", "System prompt as a string")
def _(client: ClientFormat, backend: str) -> Case:
    def up(u: Up) -> None:
        assert msgs(u)[0] == {"role": "system", "content": "Be brief."}
    return Case("system-string", client, backend,
                render(client, Convo(system="Be brief.", turns=HI.turns)), check_up=up)


@feature("system-blocks", "System prompt as blocks (joined with a blank line)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is MSG:
        request = to_messages(HI, system=[{"type": "text", "text": "A", "cache_control": {
            "type": "ephemeral"}}, {"type": "text", "text": "B"}])
    elif client is CHAT:
        request = to_chat(HI)
        request["messages"] = [{"role": "system", "content": [{"type": "text", "text": "A"}]},
                               {"role": "developer", "content": "B"}, *request["messages"]]
    else:
        request = to_responses(HI, instructions="A")
        request["input"] = [{"role": "developer", "content": "B"}, *request["input"]]

    def up(u: Up) -> None:
        assert msgs(u)[0] == {"role": "system", "content": "A\n\nB"}
    return Case("system-blocks", client, backend, request, check_up=up)


MULTI = Convo(turns=[("user", [("text", "one")]), ("assistant", [("text", "two")]),
                     ("user", [("text", "three")])])


@feature("multi-turn", "Multi-turn conversation")
def _(client: ClientFormat, backend: str) -> Case:
    def up(u: Up) -> None:
        assert [(m["role"], m["content"]) for m in msgs(u)] == [
            ("user", "one"), ("assistant", "two"), ("user", "three")]
    return Case("multi-turn", client, backend, render(client, MULTI), check_up=up)


@feature("prefill", "Final assistant turn (prefill)")
def _(client: ClientFormat, backend: str) -> Case:
    convo = Convo(turns=[("user", [("text", "Say OK")]), ("assistant", [("text", "O")])])

    def up(u: Up) -> None:
        assert msgs(u)[-1] == {"role": "assistant", "content": "O"}
    return Case("prefill", client, backend, render(client, convo), check_up=up)


@feature("content-parts", "Several text parts in one turn")
def _(client: ClientFormat, backend: str) -> Case:
    convo = Convo(turns=[("user", [("text", "part one"), ("text", "part two")])])

    def up(u: Up) -> None:
        assert msgs(u) == [{"role": "user", "content": "part one\npart two"}]
    return Case("content-parts", client, backend, render(client, convo), check_up=up)


@feature("image-inline", "Image, base64 / data: URL")
def _(client: ClientFormat, backend: str) -> Case:
    convo = Convo(turns=[("user", [("text", "what is this?"), ("image", PNG)])])

    def up(u: Up) -> None:
        (m,) = msgs(u)
        if backend == "ollama":
            assert m == {"role": "user", "content": "what is this?", "images": [PNG]}
        else:
            assert m["content"][1] == {"type": "image_url",
                                       "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    return Case("image-inline", client, backend, render(client, convo), check_up=up)


@feature("image-remote", "Image by remote URL (the translator does no I/O)")
def _(client: ClientFormat, backend: str) -> Case:
    url = "https://example.com/cat.png"
    if client is MSG:
        request = to_messages(Convo(turns=[("user", [("text", "x")])]))
        request["messages"][0]["content"].append(
            {"type": "image", "source": {"type": "url", "url": url}})
    elif client is CHAT:
        request = to_chat(HI)
        request["messages"][0]["content"] = [{"type": "image_url", "image_url": {"url": url}}]
    else:
        request = to_responses(HI)
        request["input"][0]["content"] = [{"type": "input_image", "image_url": url}]
    return Case("image-remote", client, backend, request, status="error",
                error=(400, "remote image URLs are not supported"))


# -- tools --------------------------------------------------------------------------------------

TOOLS = Convo(turns=HI.turns, tools=[WEATHER, TIME])


def _tool_names(u: Up) -> list[str]:
    return [t["function"]["name"] for t in u.get("tools", [])]


@feature("tools", "Function tools")
def _(client: ClientFormat, backend: str) -> Case:
    def up(u: Up) -> None:
        assert u["tools"][0] == {"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": WEATHER_SCHEMA}}
        assert _tool_names(u) == ["get_weather", "get_time"]
    return Case("tools", client, backend, render(client, TOOLS), check_up=up)


_CHOICES: dict[str, dict[ClientFormat, Any]] = {
    "auto": {CHAT: "auto", RESP: "auto", MSG: {"type": "auto"}},
    "none": {CHAT: "none", RESP: "none", MSG: {"type": "none"}},
    "required": {CHAT: "required", RESP: "required", MSG: {"type": "any"}},
    "named": {CHAT: {"type": "function", "function": {"name": "get_time"}},
              RESP: {"type": "function", "name": "get_time"},
              MSG: {"type": "tool", "name": "get_time"}},
}


def _choice_case(kind: str, client: ClientFormat, backend: str) -> Case:
    request = render(client, TOOLS, tool_choice=_CHOICES[kind][client])
    name = f"tool-choice-{kind}"
    if backend == "openai":
        expected: Any = ({"type": "function", "function": {"name": "get_time"}}
                         if kind == "named" else kind)

        def up(u: Up) -> None:
            assert u["tool_choice"] == expected
        return Case(name, client, backend, request, check_up=up)
    if kind == "none":
        def up_none(u: Up) -> None:
            assert "tools" not in u
        return Case(name, client, backend, request, check_up=up_none,
                    note="tools omitted")
    if kind == "auto":
        def up_auto(u: Up) -> None:
            assert _tool_names(u) == ["get_weather", "get_time"]
            assert "tool_choice" not in u
        return Case(name, client, backend, request, check_up=up_auto)
    if kind == "required":
        def up_req(u: Up) -> None:
            assert _tool_names(u) == ["get_weather", "get_time"]
            assert "tool_choice" not in u
        return Case(name, client, backend, request, status="dropped", check_up=up_req,
                    note="Ollama cannot force a tool call")

    def up_named(u: Up) -> None:
        assert _tool_names(u) == ["get_time"]
        assert "tool_choice" not in u
    return Case(name, client, backend, request, status="dropped", check_up=up_named,
                note="tools narrowed to the named one; the call is not forced")


for _kind, _desc in (("auto", "tool_choice auto"), ("none", "tool_choice none"),
                     ("required", "tool_choice required / any"),
                     ("named", "tool_choice naming one tool")):
    feature(f"tool-choice-{_kind}", _desc)(
        lambda client, backend, _k=_kind: _choice_case(_k, client, backend))


@feature("tool-call-out", "Tool call in the answer (id kept)")
def _(client: ClientFormat, backend: str) -> Case:
    def view(v: View) -> None:
        assert v.calls == [("call_1", "get_weather", {"city": "Paris"})]
        assert v.stop == "tool_use"
    return Case("tool-call-out", client, backend, render(client, TOOLS),
                answer=Answer(text="", calls=[("call_1", "get_weather", {"city": "Paris"})]),
                check_view=view)


@feature("tool-call-id-generated", "Tool call without an id (deterministic id)")
def _(client: ClientFormat, backend: str) -> Case:
    def view(v: View) -> None:
        assert v.calls == [("call_r1_0", "get_weather", {"city": "Paris"})]
    return Case("tool-call-id-generated", client, backend, render(client, TOOLS),
                answer=Answer(text="", calls=[(None, "get_weather", {"city": "Paris"})]),
                check_view=view)


@feature("parallel-tool-calls", "Parallel tool calls in the answer")
def _(client: ClientFormat, backend: str) -> Case:
    def view(v: View) -> None:
        assert [c[1] for c in v.calls] == ["get_weather", "get_time"]
        assert v.text == "Checking."
    return Case("parallel-tool-calls", client, backend, render(client, TOOLS),
                answer=Answer(text="Checking.", calls=[("call_1", "get_weather", {"city": "Oslo"}),
                                                       ("call_2", "get_time", {})]),
                check_view=view)


@feature("parallel-tool-calls-off", "Parallel tool calls disabled (first call kept)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is MSG:
        request = to_messages(TOOLS, tool_choice={"type": "auto",
                                                  "disable_parallel_tool_use": True})
    else:
        request = render(client, TOOLS, parallel_tool_calls=False)

    def up(u: Up) -> None:
        if backend == "openai":
            assert u["parallel_tool_calls"] is False
        else:
            assert "parallel_tool_calls" not in u

    def view(v: View) -> None:
        assert [c[1] for c in v.calls] == ["get_weather"]
    return Case("parallel-tool-calls-off", client, backend, request, check_up=up,
                check_view=view,
                answer=Answer(text="", calls=[("call_1", "get_weather", {"city": "Oslo"}),
                                              ("call_2", "get_time", {})]))


HISTORY = Convo(tools=[WEATHER], turns=[
    ("user", [("text", "weather?")]),
    ("assistant", [("call", "call_9", "get_weather", {"city": "Paris"})]),
    ("user", [("result", "call_9", "15C", False), ("text", "and tomorrow?")]),
])


@feature("tool-results", "Tool calls and results in the history (tool_name looked up)")
def _(client: ClientFormat, backend: str) -> Case:
    def up(u: Up) -> None:
        m = msgs(u)
        assert m[0] == {"role": "user", "content": "weather?"}
        call = m[1]["tool_calls"][0]
        if backend == "ollama":
            assert m[1]["content"] == ""
            assert call == {"id": "call_9", "function": {"index": 0, "name": "get_weather",
                                                         "arguments": {"city": "Paris"}}}
            assert m[2] == {"role": "tool", "content": "15C", "tool_call_id": "call_9",
                            "tool_name": "get_weather"}
        else:
            assert m[1]["content"] is None
            assert call == {"id": "call_9", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city":"Paris"}'}}
            assert m[2] == {"role": "tool", "tool_call_id": "call_9", "content": "15C"}
        assert m[3] == {"role": "user", "content": "and tomorrow?"}
    return Case("tool-results", client, backend, render(client, HISTORY), check_up=up)


@feature("tool-result-images", "Images inside a tool result")
def _(client: ClientFormat, backend: str) -> Case:
    convo = Convo(tools=[WEATHER], turns=[
        ("user", [("text", "screenshot?")]),
        ("assistant", [("call", "call_9", "get_weather", {"city": "Paris"})]),
        ("user", [("result", "call_9", [("text", "here"), ("image", PNG)], False)]),
    ])

    def up(u: Up) -> None:
        m = msgs(u)
        if backend == "ollama":
            assert m[2]["images"] == [PNG] and m[2]["content"] == "here"
        else:
            assert m[2] == {"role": "tool", "tool_call_id": "call_9", "content": "here"}
            assert m[3]["role"] == "user"
            assert m[3]["content"][0]["image_url"]["url"].endswith(PNG)
    return Case("tool-result-images", client, backend, render(client, convo), check_up=up,
                note="" if backend == "ollama" else "images follow as a user message")


@feature("tool-result-error", "Tool result flagged is_error")
def _(client: ClientFormat, backend: str) -> Case:
    if client is not MSG:
        return na("tool-result-error", client, backend, "no such flag")
    convo = Convo(tools=[WEATHER], turns=[
        ("user", [("text", "weather?")]),
        ("assistant", [("call", "call_9", "get_weather", {"city": "Paris"})]),
        ("user", [("result", "call_9", "boom", True)]),
    ])

    def up(u: Up) -> None:
        tool = msgs(u)[2]
        assert tool["content"] == "boom"
        assert "is_error" not in tool
    return Case("tool-result-error", client, backend, to_messages(convo), check_up=up,
                status="dropped", note="no is_error flag upstream; the text is kept")


# -- parameters ---------------------------------------------------------------------------------

_PARAMS: dict[ClientFormat, dict[str, Any]] = {
    CHAT: {"max_completion_tokens": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 20,
           "seed": 7},
    RESP: {"max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 20, "seed": 7},
    MSG: {"max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 20},
}


@feature("sampling", "max tokens, temperature, top_p, top_k, seed (each under its name)")
def _(client: ClientFormat, backend: str) -> Case:
    def up(u: Up) -> None:
        o = opts(u, backend)
        assert o[("num_predict" if backend == "ollama" else "max_tokens")] == 64
        assert (o["temperature"], o["top_p"], o["top_k"]) == (0.2, 0.9, 20)
        assert o.get("seed") == (None if client is MSG else 7)
    return Case("sampling", client, backend, render(client, HI, **_PARAMS[client]), check_up=up)


@feature("sampling-absent", "Parameters absent are not sent (no injected defaults)")
def _(client: ClientFormat, backend: str) -> Case:
    request = render(client, HI)
    request.pop("max_tokens", None)
    if client is MSG:
        request = to_messages(HI)  # max_tokens is required by Messages; it alone is sent

    def up(u: Up) -> None:
        o = opts(u, backend)
        for name in ("temperature", "top_p", "top_k", "seed", "stop", "frequency_penalty"):
            assert name not in o
        if client is not MSG:
            assert "num_predict" not in o and "max_tokens" not in o
    return Case("sampling-absent", client, backend, request, check_up=up)


@feature("stop-sequences", "Stop sequences")
def _(client: ClientFormat, backend: str) -> Case:
    if client is RESP:
        return na("stop-sequences", client, backend, "Responses has no stop parameter")
    extra = {"stop": ["END", "##"]} if client is CHAT else {"stop_sequences": ["END", "##"]}

    def up(u: Up) -> None:
        assert opts(u, backend)["stop"] == ["END", "##"]
    return Case("stop-sequences", client, backend, render(client, HI, **extra), check_up=up)


@feature("json-schema", "JSON schema output (response_format / text.format / output_config)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is CHAT:
        request = to_chat(HI, response_format={"type": "json_schema", "json_schema": {
            "name": "w", "schema": WEATHER_SCHEMA, "strict": True}})
    elif client is RESP:
        request = to_responses(HI, text={"format": {"type": "json_schema", "name": "w",
                                                    "schema": WEATHER_SCHEMA, "strict": True}})
    else:
        request = to_messages(HI, output_config={"format": {"type": "json_schema",
                                                            "schema": WEATHER_SCHEMA}})

    def up(u: Up) -> None:
        if backend == "ollama":
            assert u["format"] == WEATHER_SCHEMA
        else:
            assert u["response_format"]["type"] == "json_schema"
            assert u["response_format"]["json_schema"]["schema"] == WEATHER_SCHEMA
    return Case("json-schema", client, backend, request, check_up=up)


@feature("json-mode", "JSON mode (any JSON object)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is MSG:
        return na("json-mode", client, backend, "Messages has JSON schema only")
    request = (to_chat(HI, response_format={"type": "json_object"}) if client is CHAT
               else to_responses(HI, text={"format": {"type": "json_object"}}))

    def up(u: Up) -> None:
        if backend == "ollama":
            assert u["format"] == "json"
        else:
            assert u["response_format"] == {"type": "json_object"}
    return Case("json-mode", client, backend, request, check_up=up)


# -- reasoning ----------------------------------------------------------------------------------

@feature("reasoning-on", "Reasoning requested (effort / thinking enabled)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is CHAT:
        request = to_chat(HI, reasoning_effort="high")
    elif client is RESP:
        request = to_responses(HI, reasoning={"effort": "high", "summary": "auto"})
    else:
        request = to_messages(HI, thinking={"type": "enabled", "budget_tokens": 2048},
                              output_config={"effort": "high"})

    def up(u: Up) -> None:
        if backend == "ollama":
            assert u["think"] == "high"
        else:
            assert u["reasoning_effort"] == "high"
            assert u["chat_template_kwargs"] == {"enable_thinking": True}
        assert "budget_tokens" not in str(u)
    return Case("reasoning-on", client, backend, request, check_up=up,
                note="budget_tokens dropped" if client is MSG else "")


@feature("reasoning-off", "Reasoning disabled")
def _(client: ClientFormat, backend: str) -> Case:
    if client is CHAT:
        request = to_chat(HI, reasoning_effort="none")
    elif client is RESP:
        request = to_responses(HI, reasoning={"effort": "none"})
    else:
        request = to_messages(HI, thinking={"type": "disabled"})

    def up(u: Up) -> None:
        if backend == "ollama":
            assert u["think"] is False
        else:
            assert u["chat_template_kwargs"] == {"enable_thinking": False}
    return Case("reasoning-off", client, backend, request, check_up=up)


@feature("reasoning-unasked", "Reasoning not mentioned: backend default (think not sent)")
def _(client: ClientFormat, backend: str) -> Case:
    def up(u: Up) -> None:
        assert "think" not in u and "reasoning_effort" not in u
        assert "chat_template_kwargs" not in u
    return Case("reasoning-unasked", client, backend, render(client, HI), check_up=up)


@feature("reasoning-out", "Reasoning in the answer (thinking block with signature, reasoning "
                          "item, reasoning_content)")
def _(client: ClientFormat, backend: str) -> Case:
    def view(v: View) -> None:
        assert v.thinking == "Let me think."
        assert v.text == "42"
    return Case("reasoning-out", client, backend, render(client, HI),
                answer=Answer(text="42", thinking="Let me think."), check_view=view)


@feature("reasoning-history", "Reasoning in the history sent back upstream")
def _(client: ClientFormat, backend: str) -> Case:
    convo = Convo(turns=[("user", [("text", "q")]),
                         ("assistant", [("thinking", "hmm"), ("text", "a")]),
                         ("user", [("text", "q2")])])

    def up(u: Up) -> None:
        field_name = "thinking" if backend == "ollama" else "reasoning_content"
        assert msgs(u)[1] == {"role": "assistant", "content": "a", field_name: "hmm"}
    return Case("reasoning-history", client, backend, render(client, convo), check_up=up)


# -- answers: usage and stop reasons ----------------------------------------------------------

@feature("usage", "Usage (prompt / completion tokens)")
def _(client: ClientFormat, backend: str) -> Case:
    def view(v: View) -> None:
        assert v.usage == (11, 7)
    return Case("usage", client, backend, render(client, HI), check_view=view)


@feature("usage-missing", "Usage absent upstream (0, or for Anthropic the prompt estimate)")
def _(client: ClientFormat, backend: str) -> Case:
    def view(v: View) -> None:
        assert v.usage == ((2, 0) if client is MSG else (0, 0))  # "hi": (2 + 4) / 4 rounded up
    return Case("usage-missing", client, backend, render(client, HI),
                answer=Answer(usage=None), check_view=view)


@feature("stop-end-turn", "Natural stop")
def _(client: ClientFormat, backend: str) -> Case:
    def view(v: View) -> None:
        assert v.stop == "end_turn"
    return Case("stop-end-turn", client, backend, render(client, HI), check_view=view)


@feature("stop-length", "Length cut-off (length / max_tokens / incomplete)")
def _(client: ClientFormat, backend: str) -> Case:
    def view(v: View) -> None:
        assert v.stop == "max_tokens"
    return Case("stop-length", client, backend, render(client, HI),
                answer=Answer(finish="length"), check_view=view)


@feature("stop-content-filter", "Content filter (content_filter / refusal / incomplete)")
def _(client: ClientFormat, backend: str) -> Case:
    if backend == "ollama":
        return na("stop-content-filter", client, backend, "Ollama never filters")

    def view(v: View) -> None:
        assert v.stop == "content_filter"
    return Case("stop-content-filter", client, backend, render(client, HI),
                answer=Answer(finish="content_filter"), check_view=view)


@feature("stop-sequence-matched", "Which stop sequence matched (stop_sequence + value)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is RESP:
        return na("stop-sequence-matched", client, backend, "Responses has no stop parameter")
    extra = {"stop": ["END"]} if client is CHAT else {"stop_sequences": ["END"]}
    expect = "end_turn" if backend == "ollama" or client is CHAT else "stop_sequence"

    def view(v: View) -> None:
        assert v.stop == expect
        if expect == "stop_sequence":
            assert v.stop_sequence == "END"
    note = "Ollama does not say which stop matched: end_turn" if backend == "ollama" else ""
    return Case("stop-sequence-matched", client, backend, render(client, HI, **extra),
                answer=Answer(matched_stop="END"), check_view=view,
                status="dropped" if backend == "ollama" and client is MSG else "yes",
                note=note if client is MSG else "")


# -- errors and robustness ------------------------------------------------------------------------

@feature("upstream-error-404", "Upstream 404 (model not found) in the client's envelope")
def _(client: ClientFormat, backend: str) -> Case:
    body = (b'{"error":"model \'x\' not found"}' if backend == "ollama" else
            b'{"error":{"message":"model not found","type":"not_found_error","code":404}}')
    return Case("upstream-error-404", client, backend, render(client, HI), status="error",
                error=(404, "not found"), upstream_error=(404, body))


@feature("upstream-error-500", "Upstream 500 in the client's envelope (502)")
def _(client: ClientFormat, backend: str) -> Case:
    return Case("upstream-error-500", client, backend, render(client, HI), status="error",
                error=(502, "HTTP 500"), upstream_error=(500, b"Internal Server Error"))


@feature("unknown-fields", "Unknown fields tolerated (cache_control, context_management, ...)")
def _(client: ClientFormat, backend: str) -> Case:
    request = render(client, HI, context_management={"edits": []}, some_future_field=1,
                     service_tier="auto", store=False, metadata={"user_id": "u"})
    if client is MSG:
        request["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}

    def up(u: Up) -> None:
        assert "context_management" not in u and "some_future_field" not in u
        assert msgs(u) == [{"role": "user", "content": "hi"}]
    return Case("unknown-fields", client, backend, request, check_up=up)


@feature("previous-response-id", "previous_response_id (stateless: a clear error)")
def _(client: ClientFormat, backend: str) -> Case:
    if client is not RESP:
        return na("previous-response-id", client, backend, "Responses only")
    return Case("previous-response-id", client, backend,
                to_responses(HI, previous_response_id="resp_123"), status="error",
                error=(400, "previous_response_id"))


@feature("limits", "Input limits (too many messages: a clear error)")
def _(client: ClientFormat, backend: str) -> Case:
    many = Convo(turns=[("user", [("text", "x")])] * 10_001)
    return Case("limits", client, backend, render(client, many), status="error",
                error=(400, "more than 10000"))


import translate_cases_agents  # noqa: E402, F401  (registers the agents' shapes)


def all_cases() -> list[Case]:
    cases = []
    for name, _desc in FEATURES:
        for client in CLIENTS:
            for backend in BACKENDS:
                case = BUILDERS[name](client, backend)
                assert case is not None
                cases.append(case)
    return cases
