"""Upstream codecs: Ollama native (NDJSON) and OpenAI-compatible chat (SSE)."""
