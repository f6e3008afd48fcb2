"""Responses tools as a local model sees them, and the answer's calls as the client named them.

:class:`ToolNames` takes the request's ``tools`` (and any ``additional_tools`` items) and gives
the plain function tools the backend is offered:

- ``function`` tools as they are (deferred ones too: the hosted tool search that would find
  them is not available, so they are offered at once);
- ``custom`` (freeform) tools as a function with one string argument, ``input``, the tool's
  grammar (if any) appended to its description;
- the function and custom tools inside a ``namespace`` flattened, each under its own name, or
  ``<namespace>__<name>`` where two tools would otherwise share a name;
- every hosted tool (``web_search*``, ``file_search``, ``code_interpreter``,
  ``image_generation``, ``computer*``, ``mcp``, ``local_shell``, ``shell``, ``apply_patch``,
  ``tool_search``, and any type added later) left out: the model cannot run it.

:attr:`ToolNames.origins` maps each model-visible name whose call must be named differently
(namespaced, renamed or custom) to a :class:`~tokios_translate._common.ToolOrigin`; the
encoders use it to answer ``function_call`` items with their ``namespace`` and
``custom_tool_call`` items with their ``input``. :meth:`ToolNames.model_name` names a call
from the conversation's history the way the model was shown it.
"""

from __future__ import annotations

import orjson

from .._common import ToolOrigin
from .._parse import (
    MAX_TOOLS,
    JSONObject,
    as_obj,
    check_depth,
    get_list,
    get_obj,
    get_str,
    invalid,
    need_str,
)
from ..ir import Tool

__all__ = ["CUSTOM_INPUT", "ToolNames", "custom_arguments", "custom_input"]

#: The one argument of the function a custom tool becomes.
CUSTOM_INPUT = "input"
_CUSTOM_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {CUSTOM_INPUT: {"type": "string", "description": "The tool's whole input."}},
    "required": [CUSTOM_INPUT],
    "additionalProperties": False,
}
_CLIENT_TOOLS = ("function", "custom")


def custom_arguments(text: str) -> str:
    """The arguments JSON the model sees for a custom tool call with input ``text``."""
    return orjson.dumps({CUSTOM_INPUT: text}).decode()


def custom_input(arguments_json: str) -> str:
    """A custom tool call's ``input`` from the model's arguments (the raw text when the model
    did not answer with the ``{"input": ...}`` object it was asked for)."""
    try:
        value = orjson.loads(arguments_json)
    except orjson.JSONDecodeError:
        return arguments_json
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        return str(value[CUSTOM_INPUT])
    return arguments_json


def _custom_description(item: JSONObject, where: str) -> str | None:
    description = get_str(item, "description", f"{where}.description")
    fmt = get_obj(item, "format", f"{where}.format") or {}
    if fmt.get("type") != "grammar":
        return description
    syntax = get_str(fmt, "syntax", f"{where}.format.syntax") or "grammar"
    definition = get_str(fmt, "definition", f"{where}.format.definition") or ""
    rule = f"The input must follow this {syntax} grammar:\n{definition}"
    return f"{description}\n\n{rule}" if description else rule


class ToolNames:
    """The flattened tool list of one request (see the module doc). Call :meth:`add` for the
    request's ``tools`` and for each ``additional_tools`` item, then read :attr:`tools` and
    :attr:`origins`."""

    __slots__ = ("_entries", "_names", "origins", "tools")

    def __init__(self) -> None:
        self._entries: list[tuple[str | None, JSONObject, str]] = []
        self._names: dict[tuple[str | None, str], str] = {}
        self.tools: tuple[Tool, ...] = ()
        self.origins: dict[str, ToolOrigin] = {}

    def add(self, raw_tools: list[object], where: str) -> None:
        """Tools from a ``tools`` array at ``where``; hosted tools are left out."""
        self.add_items([(as_obj(raw, f"{where}[{i}]"), f"{where}[{i}]")
                        for i, raw in enumerate(raw_tools)])

    def add_items(self, items: list[tuple[JSONObject, str]]) -> None:
        """Tools already decoded, each with the place it came from (for error messages)."""
        for item, tw in items:
            kind = item.get("type")
            if kind in _CLIENT_TOOLS:
                self._entries.append((None, item, tw))
            elif kind == "namespace":
                namespace = need_str(item, "name", f"{tw}.name")
                for j, inner in enumerate(get_list(item, "tools", f"{tw}.tools") or ()):
                    inner_item = as_obj(inner, f"{tw}.tools[{j}]")
                    if inner_item.get("type") in _CLIENT_TOOLS:
                        self._entries.append((namespace, inner_item, f"{tw}.tools[{j}]"))
        if len(self._entries) > MAX_TOOLS:
            raise invalid(f"more than {MAX_TOOLS} tools", "tools")
        self._build()

    def model_name(self, namespace: str | None, name: str) -> str:
        """The name the model knows the client's tool ``name`` (in ``namespace``) by."""
        known = self._names.get((namespace, name))
        if known is not None:
            return known
        return f"{namespace}__{name}" if namespace else name

    def _build(self) -> None:
        count: dict[str, int] = {}
        for _, item, tw in self._entries:
            name = need_str(item, "name", f"{tw}.name")
            count[name] = count.get(name, 0) + 1
        tools: dict[str, Tool] = {}
        self._names.clear()
        self.origins.clear()
        for namespace, item, tw in self._entries:
            name = need_str(item, "name", f"{tw}.name")
            shown = name if count[name] == 1 or namespace is None else f"{namespace}__{name}"
            custom = item.get("type") == "custom"
            if custom:
                tool = Tool(name=shown, description=_custom_description(item, tw),
                            parameters=_CUSTOM_SCHEMA)
            else:
                parameters = get_obj(item, "parameters", f"{tw}.parameters") or {}
                check_depth(parameters, f"{tw}.parameters")
                tool = Tool(name=shown, description=get_str(item, "description",
                                                            f"{tw}.description"),
                            parameters=parameters)
            tools[shown] = tool  # a later definition of the same name wins, as in a dict
            self._names[(namespace, name)] = shown
            if custom or namespace is not None or shown != name:
                self.origins[shown] = ToolOrigin(name=name, namespace=namespace, custom=custom)
        self.tools = tuple(tools.values())
