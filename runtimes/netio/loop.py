"""Event-loop choice: uvloop where importable, else the stdlib loop (with 16 KiB TLS read
buffers instead of 256 KiB per connection: see TLS_READ_BUFFER).

name = install_loop("auto")          # "uvloop" or "asyncio"; then asyncio.run(...)
run(main(), loop="auto")             # or both in one call
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["LoopName", "install_loop", "run"]

LoopName = Literal["auto", "asyncio", "uvloop"]
_T = TypeVar("_T")

#: The stdlib TLS transport gives every connection a read buffer of ``SSLProtocol.max_size``
#: (256 KiB), zero-filled and so resident: ~300 KB of RSS per idle tunnel on the gateway. A TLS
#: record carries at most 16 KiB of plaintext, so no single read can use more than that.
TLS_READ_BUFFER = 16 * 1024


def _small_tls_read_buffers() -> None:
    sslproto = importlib.import_module("asyncio.sslproto")
    protocol = getattr(sslproto, "SSLProtocol", None)
    if protocol is not None and getattr(protocol, "max_size", 0) > TLS_READ_BUFFER:
        protocol.max_size = TLS_READ_BUFFER


def _uvloop_policy() -> asyncio.AbstractEventLoopPolicy | None:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return policy


def install_loop(name: LoopName | str = "auto") -> str:
    """Install the event-loop policy for `name`; return the loop actually chosen.

    "auto" picks uvloop when it can be imported; "uvloop" raises RuntimeError when it cannot.
    """
    if name not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"unknown event loop {name!r}: choose auto, asyncio or uvloop")
    if name == "asyncio":
        _small_tls_read_buffers()
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        return "asyncio"
    policy = _uvloop_policy()
    if policy is None:
        if name == "uvloop":
            raise RuntimeError("uvloop was requested but is not installed")
        _small_tls_read_buffers()
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        return "asyncio"
    asyncio.set_event_loop_policy(policy)
    return "uvloop"


def run(coro: Coroutine[Any, Any, _T], *, loop: LoopName | str = "auto") -> _T:
    """Install the chosen loop and run `coro` to completion (as asyncio.run)."""
    install_loop(loop)
    return asyncio.run(coro)
