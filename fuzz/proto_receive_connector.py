"""Fuzz harness: bytes a gateway sends, fed to a fresh connector that has said HELLO.

Invariants (fuzz/_proto_harness.py): only RemoteProtocolError escapes receive_data, and the
events are the same whole, one byte at a time and split at every offset.
"""

from _proto_harness import make_harness

TestOneInput = make_harness("proto_receive_connector")
