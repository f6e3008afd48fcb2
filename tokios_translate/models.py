"""``GET /v1/models``: the backend's model list (Ollama ``/api/tags``, OpenAI-compatible
``/v1/models``) shaped as an OpenAI or Anthropic model list."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ._common import BackendKind, ClientFormat
from ._parse import object_or_none


def list_body(client: ClientFormat, names: Iterable[str], *, created: int,
              owned_by: str = "tokios",
              extra: Mapping[str, Mapping[str, Any]] | None = None) -> bytes:
    """An OpenAI ``{"object":"list","data":[model...]}`` or, for Messages clients, an Anthropic
    ``{"data":[{"type":"model",...}],"has_more":false,...}`` list of ``names``. ``extra[name]``
    holds fields added to that model's object (after the format's own)."""
    ids = list(dict.fromkeys(names))
    more = extra or {}
    if client is ClientFormat.MESSAGES:
        created_at = _rfc3339(created)
        return orjson.dumps({
            "data": [{"type": "model", "id": n, "display_name": n, "created_at": created_at,
                      "lifecycle": "active", **more.get(n, {})} for n in ids],
            "has_more": False,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        })
    return orjson.dumps({
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": owned_by,
                  **more.get(n, {})} for n in ids],
    })


def model_body(client: ClientFormat, name: str, *, created: int,
               owned_by: str = "tokios", extra: Mapping[str, Any] | None = None) -> bytes:
    """One model object (``GET /v1/models/{id}``): OpenAI's, or Anthropic's for Messages
    clients, with the fields of ``extra`` added."""
    if client is ClientFormat.MESSAGES:
        return orjson.dumps({"type": "model", "id": name, "display_name": name,
                             "created_at": _rfc3339(created), "lifecycle": "active",
                             **(extra or {})})
    return orjson.dumps({"id": name, "object": "model", "created": created,
                         "owned_by": owned_by, **(extra or {})})


def _rfc3339(unix: int) -> str:
    # Civil-from-days (H. Hinnant), so no clock or datetime-with-timezone module is needed.
    days, rest = divmod(unix, 86400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def model_list_path(backend: BackendKind) -> str:
    """Ollama ``/api/tags``; every OpenAI-compatible server (llama.cpp too) ``/v1/models``."""
    return "/api/tags" if backend.speaks_ollama else "/v1/models"


def upstream_model_names(backend: BackendKind, body: bytes, *,
                         limit: int = 1000, max_name: int = 256) -> tuple[str, ...] | None:
    """The model names in a backend's list answer (Ollama ``{"models":[{"name":...}]}``,
    OpenAI ``{"data":[{"id":...}]}``): at most ``limit`` names of at most ``max_name``
    characters (longer ones are skipped), or None when the answer is not such a list."""
    obj = object_or_none(body)
    if obj is None:
        return None
    field, key = ("models", "name") if backend.speaks_ollama else ("data", "id")
    entries = obj.get(field)
    if not isinstance(entries, list):
        return None
    names: dict[str, None] = {}
    for entry in entries:
        name = entry.get(key) if isinstance(entry, dict) else None
        if isinstance(name, str) and 0 < len(name) <= max_name:
            names[name] = None
            if len(names) >= limit:
                break
    return tuple(names)
