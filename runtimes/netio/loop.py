"""Event-loop choice: uvloop where importable, else the stdlib loop.

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
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        return "asyncio"
    policy = _uvloop_policy()
    if policy is None:
        if name == "uvloop":
            raise RuntimeError("uvloop was requested but is not installed")
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        return "asyncio"
    asyncio.set_event_loop_policy(policy)
    return "uvloop"


def run(coro: Coroutine[Any, Any, _T], *, loop: LoopName | str = "auto") -> _T:
    """Install the chosen loop and run `coro` to completion (as asyncio.run)."""
    install_loop(loop)
    return asyncio.run(coro)
