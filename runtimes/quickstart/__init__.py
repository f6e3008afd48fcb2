"""``./scripts/quickstart``: Tokios end to end on one machine, with one command.

Stage one (:mod:`runtimes.quickstart.__main__`, standard library only, runs on the system
Python): make ``.venv`` and install Tokios into it. Stage two (:mod:`runtimes.quickstart.run`,
in ``.venv``): start a model server (llama-cpp-python with Gemma 3 270M, or the user's own),
the gateway with TLS from a local CA, and a connector; send one real chat request through the
tunnel; print what the user's own agents need; serve until Ctrl-C.
"""
