"""What both ends of a tunnel share, gateway and connector, besides the protocol core.

- ``credit.py`` (no I/O, no event loop, no threads): :class:`~runtimes.tunnel.credit.Outbox`,
  one stream's body bytes sent within its flow-control credit. Every sender of body bytes
  uses it: the gateway (request bodies), the asyncio and the threaded connector (answers).
- ``headers.py``: the response headers a connector tells the gateway about an answer with
  (``tokios-retryable``), which no client ever sees.
- ``pump.py`` (asyncio): :class:`~runtimes.tunnel.pump.Pump`, which drives one tunnel
  connection over one WebSocket, and :class:`~runtimes.tunnel.pump.Signal`, the one-waiter
  event the asyncio senders wait on. The threaded connector never imports it.

This package imports nothing itself, so importing ``runtimes.tunnel.credit`` (or
``headers``) loads no event loop (an import-linter contract checks it for the threaded connector).
"""
