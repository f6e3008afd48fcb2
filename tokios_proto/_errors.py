"""Errors, following h11: one abstract base, one class per side at fault.

* :class:`LocalProtocolError` -- *you* (the caller) misused the API. Raised only from commands and
  constructors; the connection is left unchanged, so the caller may fix the call and go on.
* :class:`RemoteProtocolError` -- the *peer* broke the protocol. Raised only from
  :meth:`Connection.receive_data`, after the core has queued a GOAWAY carrying ``code`` and moved
  to the sticky ``CLOSED`` state: the shell flushes :meth:`Connection.data_to_send` and closes.

Messages never contain payload bytes or secrets, only sizes, ids and codes.
"""

from __future__ import annotations

from ._codes import ErrorCode

__all__ = ["FlowControlError", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Abstract base of the two protocol errors; ``code`` is the wire :class:`ErrorCode`."""

    def __init__(self, msg: str, *, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise a subclass")
        super().__init__(msg)
        self.msg = msg
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.msg!r}, code={self.code.name})"


class LocalProtocolError(ProtocolError):
    """The caller asked for something the protocol or the current state forbids."""


class FlowControlError(LocalProtocolError):
    """``send_data`` was given more bytes than :meth:`Connection.available_to_send` allows."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, code=ErrorCode.FLOW_CONTROL_ERROR)


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; a GOAWAY with ``code`` is already queued."""
