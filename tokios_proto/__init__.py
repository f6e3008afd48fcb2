"""Tokios tunnel protocol: a pure, I/O-free (sans-IO) state machine."""
