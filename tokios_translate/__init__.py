"""Tokios translators between client API formats and model backends. Pure, no I/O."""
