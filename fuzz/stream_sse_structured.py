"""Fuzz harness: structure-aware sse upstream streams through every client format."""

from _stream_structured import make_structured_harness

from tokios_translate._common import BackendKind

TestOneInput = make_structured_harness(BackendKind.LLAMACPP)
