"""Fuzz harness: bytes a gateway sends, fed to an ESTABLISHED connector with
streams in several states.

Invariants (fuzz/_proto_harness.py): only RemoteProtocolError escapes receive_data, and the
events are the same whole, one byte at a time and split at every offset.
"""

from _proto_harness import make_harness

TestOneInput = make_harness("proto_established_connector")
