"""Response headers a connector sends the gateway about an answer, never passed to a client.

``RETRYABLE_HEADER: 1`` on an error answer says the model server behind this connector failed
before any byte of its answer (refused or dropped the connection, answered a 5xx status, or
said nothing until the first-byte timeout): the request never started generating there, so
the gateway may send it to another connector serving the deployment, and answers this error
only when no other one can take it (without the header).
"""

from __future__ import annotations

__all__ = ["CONNECTOR_ONLY_HEADERS", "RETRYABLE_HEADER"]

RETRYABLE_HEADER = "tokios-retryable"

#: Response headers the gateway drops before answering the client.
CONNECTOR_ONLY_HEADERS = frozenset({RETRYABLE_HEADER})
