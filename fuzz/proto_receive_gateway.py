"""Fuzz harness: bytes a connector sends, fed to a fresh gateway waiting for HELLO.

Invariants (fuzz/_proto_harness.py): only RemoteProtocolError escapes receive_data, and the
events are the same whole, one byte at a time and split at every offset.
"""

from _proto_harness import make_harness

TestOneInput = make_harness("proto_receive_gateway")
