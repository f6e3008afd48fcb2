"""Fuzz harness: the ollama upstream codec translated to the messages client format."""

from _stream_harness import make_harness

from tokios_translate._common import BackendKind, ClientFormat

TestOneInput = make_harness(BackendKind.OLLAMA, ClientFormat.MESSAGES)
