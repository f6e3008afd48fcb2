"""Fuzz harness: the sse upstream codec translated to the responses client format."""

from _stream_harness import make_harness

from tokios_translate._common import BackendKind, ClientFormat

TestOneInput = make_harness(BackendKind.LLAMACPP, ClientFormat.RESPONSES)
