"""``tokios-connector``: dial a Tokios gateway and serve a local model through it.

``main(argv)`` returns the exit code (0 stopped by a signal, 2 usage error, 3 the gateway
refused this connector for good, 4 ``--backend auto`` found no model server).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

from runtimes.config import apply_config, read_config, take_config_argument
from runtimes.connector.handling import KEEPALIVE_INTERVAL, parse_model_map
from runtimes.connector.health import HEALTH_INTERVAL
from runtimes.connector.metrics import parse_listen
from runtimes.connector.serving import (
    FIRST_BYTE_TIMEOUT,
    HEAD_HOLD,
    IDLE_TIMEOUT,
    REQUEST_TIMEOUT,
)
from runtimes.connector.settings import (
    CONNECT_TIMEOUT,
    EXIT_OK,
    EXIT_PERMANENT,
    EXIT_PROBE_FAILED,
    EXIT_USAGE,
    ConnectorSettings,
)
from runtimes.connector.threaded import serve_until_signal
from runtimes.connector.tunnels import DEFAULT_TUNNELS, MAX_GATEWAYS, MAX_TUNNELS
from runtimes.logs import LEVELS, LOG_FORMATS, configure_logging
from tokios_translate import BackendKind

# The asyncio runtime (``runtimes.connector.app``, ``runtimes.netio``, asyncio itself) is
# imported only when it runs, so `--runtime threaded` never loads an event loop.

__all__ = ["build_parser", "main", "settings_from_args", "tunnel_url"]

TUNNEL_PATH = "/v1/tunnel"
#: Ceiling of --max-concurrent-streams: the gateway's streams per tunnel
#: (runtimes/gateway/tunnels.py MAX_STREAMS_PER_TUNNEL).
MAX_CONCURRENT_STREAMS = 16_384
#: Bounds of --keepalive-interval (proxies give up on a silent connection after ~100 s).
MIN_KEEPALIVE, MAX_KEEPALIVE = 0.05, 90.0

_DESCRIPTION = """\
Connect a local model server (Ollama, llama.cpp, vLLM, LM Studio or any OpenAI-compatible
server) to a Tokios gateway. The connector dials out to the gateway over wss:// and never
listens on a port: the model server needs no inbound access from the internet.

It offers the deployments named by --model, serves those the token allows, and reconnects by
itself (full-jitter exponential back-off) when the gateway restarts or the network drops."""

#: The environment variable of each option that has one (by ``dest``): it overrides the
#: config file, and a flag overrides it.
ENVIRONMENT = {
    "gateway": "TOKIOS_GATEWAY",
    "token": "TOKIOS_CONNECTOR_TOKEN",
    "upstream": "TOKIOS_UPSTREAM",
    "keepalive_interval": "TOKIOS_KEEPALIVE_INTERVAL",
    "connect_timeout": "TOKIOS_CONNECT_TIMEOUT",
    "head_hold": "TOKIOS_HEAD_HOLD",
    "first_byte_timeout": "TOKIOS_FIRST_BYTE_TIMEOUT",
    "idle_timeout": "TOKIOS_IDLE_TIMEOUT",
    "request_timeout": "TOKIOS_REQUEST_TIMEOUT",
    "health_interval": "TOKIOS_HEALTH_INTERVAL",
    "metrics_listen": "TOKIOS_CONNECTOR_METRICS_LISTEN",
    "tunnels": "TOKIOS_TUNNELS",
}
#: Bounds (seconds) of --health-interval (0 turns the checks off).
MIN_HEALTH_INTERVAL, MAX_HEALTH_INTERVAL = 0.1, 3600.0
#: Bounds (seconds) of the upstream clocks: --connect-timeout, --head-hold, ...
TIMEOUT_BOUNDS = {
    "connect_timeout": (0.1, 300.0),
    "head_hold": (0.0, 30.0),
    "first_byte_timeout": (1.0, 86_400.0),
    "idle_timeout": (1.0, 86_400.0),
    "request_timeout": (1.0, 7 * 86_400.0),
}
CONFIG_ENV_VAR = "TOKIOS_CONNECTOR_CONFIG"

_EPILOG = """\
config file:
  --config FILE (or TOKIOS_CONNECTOR_CONFIG) reads options from a TOML file, one key per long
  option without its dashes (gateway = "https://gw.example.com", model = ["coder=qwen3:8b"],
  log-format = "json"); a flag, then its environment variable, win over the file.

environment:
  TOKIOS_GATEWAY          default for --gateway (several: separated by commas)
  TOKIOS_TUNNELS          default for --tunnels
  TOKIOS_CONNECTOR_TOKEN  default for --token (prefer it: arguments show in `ps`)
  TOKIOS_UPSTREAM         default for --upstream
  TOKIOS_KEEPALIVE_INTERVAL  default for --keepalive-interval
  TOKIOS_CONNECT_TIMEOUT, TOKIOS_HEAD_HOLD, TOKIOS_FIRST_BYTE_TIMEOUT, TOKIOS_IDLE_TIMEOUT,
  TOKIOS_REQUEST_TIMEOUT     defaults for the model server's clocks (below)
  TOKIOS_CONNECTOR_CONFIG    default for --config
  TOKIOS_HEALTH_INTERVAL     default for --health-interval
  TOKIOS_CONNECTOR_METRICS_LISTEN  default for --metrics-listen

operations:
  --health-interval      check the model server every SECONDS (Ollama GET /api/tags, others
                         GET /v1/models; 5 s timeout) and tell the gateway when it turns
                         healthy or unhealthy, with its model list (default 10; 0: never)
  --metrics-listen       serve Prometheus metrics at http://HOST:PORT/metrics (a bare PORT
                         listens on 127.0.0.1; off unless given)
  after every request the connector reports its input and output tokens to the gateway
  (`tokios-gateway usage`): the model server's count, or an estimate marked as such

model server clocks (each ends the request with an error in the client's own format:
a whole 502/504 answer before the response began, else the stream's in-stream error; a
failure before any byte of the model's answer lets the gateway try another connector):
  --connect-timeout      connecting to --upstream (default 5 s)
  --first-byte-timeout   from the request to the first byte of the answer (default 600 s:
                         a large model may take minutes to load; a non-streamed answer's
                         first byte comes when it is fully generated)
  --idle-timeout         the longest silence in the middle of an answer (default 120 s)
  --request-timeout      the whole answer (default 3600 s)
  --head-hold            a streamed answer starts (200 and its opening) when the model server
                         answers or after this long, whichever first (default 1 s); until
                         then a failure is a whole error answer the gateway may retry

several tunnels:
  The connector holds --tunnels tunnels at once (default 2). When the gateway is several
  nodes (machines or `serve --workers`), each tunnel goes to a different node where it can:
  one that lands on a node another tunnel holds is closed and dialled again (a few times,
  then kept). Give --gateway once per node, or once for a load balancer in front of them.
  When a node shuts down (GOAWAY), a replacement tunnel is dialled at once, before the old
  one has finished its requests, so a rolling restart never leaves the model unreachable.

exit codes:
  0  stopped by SIGTERM/SIGINT
  2  bad arguments
  3  the gateway refused this connector for good (invalid or revoked token, deployments not
     allowed, unsupported protocol version): fix the token or --model, then restart
  4  --backend auto found no known model server at --upstream

example:
  tokios-connector --gateway https://gw.example.com --token tkct-... \\
      --upstream http://127.0.0.1:11434 --backend ollama --model coder=qwen3:8b"""


class _Gateways(argparse._AppendAction):
    """``--gateway URL``, repeatable: the first flag replaces the addresses of the environment
    or the config file, the next ones add to it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, [])
        super().__call__(parser, namespace, values, option_string)


def _gateways_from_env() -> list[str] | None:
    value = os.environ.get("TOKIOS_GATEWAY", "")
    return [part for part in value.replace(",", " ").split() if part] or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokios-connector", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", metavar="URL", action=_Gateways,
                        default=_gateways_from_env(),
                        help="the gateway: https://host[:port], wss://host[:port]/v1/tunnel, "
                             "or http:// / ws:// for loopback tests; repeat for several nodes "
                             f"(at most {MAX_GATEWAYS})")
    parser.add_argument("--tunnels", metavar="N", type=int,
                        default=os.environ.get("TOKIOS_TUNNELS", DEFAULT_TUNNELS),
                        help=f"tunnels held at once, to distinct gateway nodes where possible "
                             f"(default {DEFAULT_TUNNELS}, 1..{MAX_TUNNELS}; TOKIOS_TUNNELS)")
    parser.add_argument("--token", metavar="TOKEN",
                        default=os.environ.get("TOKIOS_CONNECTOR_TOKEN"),
                        help="the connector token (from `tokios-gateway connector-token add`)")
    parser.add_argument("--upstream", metavar="URL", default=os.environ.get("TOKIOS_UPSTREAM"),
                        help="the model server, e.g. http://127.0.0.1:11434")
    parser.add_argument("--backend", default="auto",
                        choices=("ollama", "llamacpp", "vllm", "lmstudio", "openai", "auto"),
                        help="the model server's kind (default auto: probe /api/version, "
                             "/props, /v1/models)")
    parser.add_argument("--model", metavar="DEPLOYMENT=UPSTREAM_MODEL", action="append",
                        default=[], help="serve DEPLOYMENT with the upstream model "
                                         "UPSTREAM_MODEL (a bare NAME: the same name); repeat")
    parser.add_argument("--ca-file", metavar="FILE",
                        help="trust this CA bundle for the gateway instead of the system roots")
    parser.add_argument("--runtime", choices=("asyncio", "threaded"), default="asyncio",
                        help="asyncio (default; an event loop, see --loop) or threaded "
                             "(blocking sockets and threads, no event loop at all)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                        help="asyncio runtime's event loop (default: uvloop where installed)")
    parser.add_argument("--max-concurrent-streams", metavar="N", type=int, default=64,
                        help="requests served at once (default 64, at most "
                             f"{MAX_CONCURRENT_STREAMS:,}, the gateway's per-tunnel limit)")
    parser.add_argument("--keepalive-interval", metavar="SECONDS", type=float,
                        default=os.environ.get("TOKIOS_KEEPALIVE_INTERVAL", KEEPALIVE_INTERVAL),
                        help="once a streamed answer started (200 and the format's opening "
                             "events, see --head-hold) and while the model has not produced "
                             "its first token, a keep-alive follows every SECONDS (default "
                             f"{KEEPALIVE_INTERVAL:g}, "
                             f"{MIN_KEEPALIVE:g}..{MAX_KEEPALIVE:g})")
    for flag, default, what in (
            ("--connect-timeout", CONNECT_TIMEOUT, "connecting to the model server"),
            ("--first-byte-timeout", FIRST_BYTE_TIMEOUT,
             "from the request to the first byte of the model server's answer"),
            ("--idle-timeout", IDLE_TIMEOUT,
             "the longest silence of the model server in the middle of an answer"),
            ("--request-timeout", REQUEST_TIMEOUT, "a whole answer"),
            ("--head-hold", HEAD_HOLD,
             "how long a streamed answer's head waits for the model server's")):
        dest = flag[2:].replace("-", "_")
        low, high = TIMEOUT_BOUNDS[dest]
        parser.add_argument(flag, metavar="SECONDS", type=float,
                            default=os.environ.get(ENVIRONMENT[dest], default),
                            help=f"{what} (default {default:g}, {low:g}..{high:g}; "
                                 f"{ENVIRONMENT[dest]})")
    parser.add_argument("--health-interval", metavar="SECONDS", type=float,
                        default=os.environ.get(ENVIRONMENT["health_interval"], HEALTH_INTERVAL),
                        help="seconds between health checks of the model server (default "
                             f"{HEALTH_INTERVAL:g}, {MIN_HEALTH_INTERVAL:g}.."
                             f"{MAX_HEALTH_INTERVAL:g}; 0: no checks)")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        default=os.environ.get(ENVIRONMENT["metrics_listen"]),
                        help="serve Prometheus metrics on HOST:PORT (a bare PORT: 127.0.0.1); "
                             "off unless given")
    parser.add_argument("--log-level", choices=LEVELS, default="info",
                        help="log verbosity (default info); no level logs a secret, a header "
                             "value, a query string, a prompt or a completion")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help="text lines (default) or one JSON object per line, with the "
                             "gateway's request id")
    parser.add_argument("--config", metavar="FILE",
                        help="read options from this TOML file (see below)")
    return parser


def tunnel_url(gateway: str) -> str:
    """The WebSocket URL of the tunnel endpoint for a ``--gateway`` value."""
    parsed = urllib.parse.urlsplit(gateway.strip())
    scheme = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}.get(parsed.scheme)
    if scheme is None or not parsed.hostname:
        raise ValueError("--gateway must be https://host[:port] (or wss://, http://, ws://)")
    path = parsed.path.rstrip("/")
    if not path.endswith(TUNNEL_PATH):
        path = path + TUNNEL_PATH
    return urllib.parse.urlunsplit((scheme, parsed.netloc, path, "", ""))


def settings_from_args(args: argparse.Namespace) -> ConnectorSettings:
    """Validate the arguments; raise ValueError with a readable reason."""
    if not args.gateway:
        raise ValueError("--gateway (or TOKIOS_GATEWAY) is required")
    if len(args.gateway) > MAX_GATEWAYS:
        raise ValueError(f"give at most {MAX_GATEWAYS} --gateway addresses")
    if not 1 <= int(args.tunnels) <= MAX_TUNNELS:
        raise ValueError(f"--tunnels must be in 1..{MAX_TUNNELS}")
    if not args.token:
        raise ValueError("--token (or TOKIOS_CONNECTOR_TOKEN) is required")
    if not args.upstream:
        raise ValueError("--upstream (or TOKIOS_UPSTREAM) is required")
    urls = tuple(dict.fromkeys(tunnel_url(gateway) for gateway in args.gateway))
    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme not in ("http", "https") or not upstream.hostname:
        raise ValueError("--upstream must be http://host:port or https://host:port")
    models = parse_model_map(args.model)
    if not models:
        raise ValueError("give at least one --model DEPLOYMENT=UPSTREAM_MODEL")
    if not 1 <= args.max_concurrent_streams <= MAX_CONCURRENT_STREAMS:
        raise ValueError(f"--max-concurrent-streams must be in 1..{MAX_CONCURRENT_STREAMS}")
    if not MIN_KEEPALIVE <= args.keepalive_interval <= MAX_KEEPALIVE:
        raise ValueError(f"--keepalive-interval must be in {MIN_KEEPALIVE:g}..{MAX_KEEPALIVE:g}"
                         " seconds")
    for dest, (low, high) in TIMEOUT_BOUNDS.items():
        value = float(getattr(args, dest))
        if not low <= value <= high:
            raise ValueError(f"--{dest.replace('_', '-')} must be in {low:g}..{high:g} seconds")
    health_interval = float(args.health_interval)
    if health_interval != 0 and not MIN_HEALTH_INTERVAL <= health_interval <= MAX_HEALTH_INTERVAL:
        raise ValueError(f"--health-interval must be 0 or in {MIN_HEALTH_INTERVAL:g}.."
                         f"{MAX_HEALTH_INTERVAL:g} seconds")
    metrics_listen = parse_listen(str(args.metrics_listen)) if args.metrics_listen else None
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise ValueError(f"--ca-file {args.ca_file!r} does not exist")
    backend = BackendKind.OPENAI if args.backend == "auto" else BackendKind(args.backend)
    return ConnectorSettings(tunnel_url=urls[0], other_tunnel_urls=urls[1:],
                             tunnels=int(args.tunnels), token=args.token, upstream=args.upstream,
                             backend=backend, models=models, ca_file=args.ca_file,
                             max_concurrent_streams=args.max_concurrent_streams,
                             keepalive_interval=args.keepalive_interval,
                             connect_timeout=float(args.connect_timeout),
                             head_hold=float(args.head_hold),
                             first_byte_timeout=float(args.first_byte_timeout),
                             idle_timeout=float(args.idle_timeout),
                             request_timeout=float(args.request_timeout),
                             health_interval=health_interval, metrics_listen=metrics_listen)


async def _main(settings: ConnectorSettings, auto: bool) -> int:
    import asyncio  # noqa: PLC0415 (see the note on the imports)

    from runtimes.connector.app import Connector, probe_backend  # noqa: PLC0415
    from runtimes.netio import UpstreamPool  # noqa: PLC0415

    if auto:
        pool = UpstreamPool(settings.upstream, max_connections=2, read_timeout=10.0)
        try:
            kind = await probe_backend(pool)
        finally:
            await pool.aclose()
        if kind is None:
            sys.stderr.write(f"tokios-connector: no model server found at {settings.upstream} "
                             "(tried /api/version, /props, /v1/models); give --backend\n")
            return EXIT_PROBE_FAILED
        logging.getLogger("tokios.connector").info("upstream detected as %s", kind.value)
        settings = dataclasses.replace(settings, backend=kind)
    connector = Connector(settings)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await connector.run()
    except asyncio.CancelledError:
        return EXIT_OK


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the config file's values as defaults (ConfigError if it cannot
    be used; SystemExit(2) for bad arguments, as argparse does)."""
    parser = build_parser()
    argv, path = take_config_argument(sys.argv[1:] if argv is None else argv,
                                      env_var=CONFIG_ENV_VAR)
    if path is not None:
        apply_config(read_config(path), path, [parser], environment=ENVIRONMENT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_arguments(argv)
        settings = settings_from_args(args)
    except ValueError as exc:  # ConfigError too
        sys.stderr.write(f"tokios-connector: {exc}\n")
        return EXIT_USAGE
    configure_logging(args.log_level, fmt=args.log_format)
    if args.runtime == "threaded":
        code = serve_until_signal(settings, auto=args.backend == "auto")
    else:
        import asyncio  # noqa: PLC0415 (see the note on the imports)

        from runtimes.netio import install_loop  # noqa: PLC0415

        install_loop(args.loop)
        code = asyncio.run(_main(settings, args.backend == "auto"))
    if code == EXIT_PERMANENT:
        sys.stderr.write("tokios-connector: stopped: the gateway refused this connector for "
                         "good (see the message above); not retrying\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
