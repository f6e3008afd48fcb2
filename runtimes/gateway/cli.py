"""``tokios-gateway``: the server (``serve``) and the admin commands on the tenant store.

This is a contract scripts depend on (see docs/operations.md):

- Every admin command takes ``--data DIR`` (default ``$TOKIOS_DATA``) or ``--store URL``
  (PostgreSQL; default ``$TOKIOS_STORE``), and ``--json``, before or after its arguments.
- With ``--json`` stdout holds exactly one JSON object: the result, or on failure
  ``{"error": {"code": ..., "message": ...}}``. The message also goes to stderr.
- Exit codes: 0 success, 1 store or database failure, 2 usage (bad arguments, invalid name, no
  data directory or store), 3 not found, 4 already exists.

``main(argv)`` returns the exit code; ``serve`` calls ``runtimes.gateway.server.run(options)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from runtimes.cluster.revocations import announce_once, notice_for
from runtimes.config import ConfigError, apply_config, read_config, take_config_argument
from runtimes.gateway import admin, admin_client
from runtimes.gateway.admin import (
    CREATING,
    AdminHandler,
    parse_count_or_default,
    parse_duration,
    parse_limit,
    parse_seconds_or_default,
    parse_since,
    parse_time,
)
from runtimes.gateway.options import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_STREAM_SILENCE_TIMEOUT,
    DEFAULT_USAGE_FLUSH_INTERVAL,
    MAX_GRACE_PERIOD,
    MAX_HTTP_TIMEOUT,
    MAX_MAX_BODY_BYTES,
    MAX_MAX_HEADER_BYTES,
    MAX_STREAM_SILENCE_TIMEOUT,
    MAX_USAGE_FLUSH_INTERVAL,
    MIN_MAX_BODY_BYTES,
    MIN_MAX_HEADER_BYTES,
    MIN_STREAM_SILENCE_TIMEOUT,
    ListenAddress,
    LoopName,
    ServeOptions,
    parse_listen_address,
)
from runtimes.gateway.queue import DEFAULT_QUEUE_SIZE, DEFAULT_QUEUE_TIMEOUT
from runtimes.gateway.workers import MAX_WORKERS, run_workers, worker_context
from runtimes.logs import LEVELS, LOG_FORMATS
from runtimes.store import (
    AlreadyExists,
    InvalidName,
    NotFound,
    StoreError,
    is_postgres_url,
    open_store,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_ALREADY_EXISTS = 4

class UsageError(Exception):
    """A bad command line; ``usage`` is the relevant usage line."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so --json can report it."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}", self.format_usage())


# --- serve -------------------------------------------------------------------------------------


def _resolve_loop(requested: str) -> LoopName:
    installed = importlib.util.find_spec("uvloop") is not None
    if requested == "uvloop" and not installed:
        raise UsageError("--loop uvloop: uvloop is not installed (pip install 'tokios[uvloop]')")
    if requested == "asyncio":
        return "asyncio"
    return "uvloop" if installed else "asyncio"


def serve_options(args: argparse.Namespace, data_dir: str | None,
                  store_url: str | None = None) -> ServeOptions:
    """Validate ``serve``'s arguments into ServeOptions; raise UsageError with the reason.
    The store is ``store_url`` (PostgreSQL) if given, else SQLite in ``data_dir``."""
    def address(option: str, text: str) -> ListenAddress:
        try:
            return parse_listen_address(text)
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from exc

    listen = address("--listen", args.listen)
    tunnel_listen = None if args.tunnel_listen is None \
        else address("--tunnel-listen", args.tunnel_listen)
    metrics_listen = None if args.metrics_listen is None \
        else address("--metrics-listen", args.metrics_listen)
    for option, other in (("--tunnel-listen", tunnel_listen),
                          ("--metrics-listen", metrics_listen)):
        if other is not None and other == listen and listen.port != 0:
            raise UsageError(f"{option} must differ from --listen (omit it to serve that "
                             "path on the same port)")
    metrics_token = args.metrics_token or os.environ.get("TOKIOS_METRICS_TOKEN") or None
    if metrics_token is not None and not (
            16 <= len(metrics_token) <= 256 and metrics_token.isascii()
            and metrics_token.isprintable() and " " not in metrics_token):
        raise UsageError("--metrics-token (or TOKIOS_METRICS_TOKEN) must be 16-256 printable "
                         "ASCII characters without spaces")
    if not (math.isfinite(args.usage_flush_interval)
            and 0.1 <= args.usage_flush_interval <= MAX_USAGE_FLUSH_INTERVAL):
        raise UsageError("--usage-flush-interval must be between 0.1 and "
                         f"{MAX_USAGE_FLUSH_INTERVAL:g} seconds")
    has_tls = args.tls_cert is not None or args.tls_key is not None
    if has_tls and (args.tls_cert is None or args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together: give both")
    if has_tls and args.insecure_http:
        raise UsageError("choose either --tls-cert/--tls-key or --insecure-http, not both")
    if not has_tls and not args.insecure_http:
        raise UsageError("give --tls-cert FILE --tls-key FILE, or --insecure-http "
                         "(plain HTTP, loopback only)")
    if args.allow_insecure_non_loopback and not args.insecure_http:
        raise UsageError("--allow-insecure-non-loopback only applies with --insecure-http")
    if args.insecure_http and not args.allow_insecure_non_loopback:
        for option, where in (("--listen", listen), ("--tunnel-listen", tunnel_listen),
                              ("--metrics-listen", metrics_listen)):
            if where is not None and not where.is_loopback:
                raise UsageError(
                    f"refusing --insecure-http on {option} {where}, which is not a loopback "
                    "address: keys and prompts would cross the network in clear. Use TLS, or "
                    "add --allow-insecure-non-loopback if something else encrypts this hop "
                    "(e.g. a TLS-terminating proxy on a private network)")
    for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{option}: no such file: {path}")
    if not (math.isfinite(args.grace_period) and 0 <= args.grace_period <= MAX_GRACE_PERIOD):
        raise UsageError(f"--grace-period must be between 0 and {MAX_GRACE_PERIOD:g} seconds")
    node_listen = None if args.node_listen is None \
        else address("--node-listen", args.node_listen)
    cluster_secret = _cluster_secret(args)
    if node_listen is not None:
        if data_dir is None and not (getattr(args, "redis", None)
                                     or os.environ.get("TOKIOS_REDIS")):
            raise UsageError("--node-listen needs --redis (or a data directory for the "
                             "cluster file of one machine)")
        if cluster_secret is None:
            raise UsageError("--node-listen needs the cluster secret: --cluster-secret-file "
                             "FILE or TOKIOS_CLUSTER_SECRET")
        if args.node_url is None and node_listen.host in ("0.0.0.0", "::"):  # noqa: S104
            raise UsageError("--node-listen on a wildcard address needs --node-url, the URL "
                             "other nodes reach this one at")
    if args.node_url is not None and (not args.node_url.startswith(("http://", "https://"))
                                      or len(args.node_url) > 1000):
        raise UsageError("--node-url must start with http:// or https://")
    if args.node_ca is not None and not Path(args.node_ca).is_file():
        raise UsageError(f"--node-ca: no such file: {args.node_ca}")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be between 1 and {MAX_WORKERS}")
    if args.workers > 1 and metrics_listen is not None and metrics_listen.port == 0:
        raise UsageError("with --workers, give --metrics-listen a port: worker i serves "
                         "/metrics on that port + i")
    if not (math.isfinite(args.stream_silence_timeout) and MIN_STREAM_SILENCE_TIMEOUT
            <= args.stream_silence_timeout <= MAX_STREAM_SILENCE_TIMEOUT):
        raise UsageError(f"--stream-silence-timeout must be between "
                         f"{MIN_STREAM_SILENCE_TIMEOUT:g} and {MAX_STREAM_SILENCE_TIMEOUT:g} "
                         "seconds")
    if not MIN_MAX_BODY_BYTES <= args.max_body_bytes <= MAX_MAX_BODY_BYTES:
        raise UsageError(f"--max-body-bytes must be between {MIN_MAX_BODY_BYTES} and "
                         f"{MAX_MAX_BODY_BYTES}")
    redis_url = getattr(args, "redis", None) or os.environ.get("TOKIOS_REDIS") or None
    if redis_url is not None and not redis_url.startswith(REDIS_SCHEMES):
        raise UsageError("--redis (or TOKIOS_REDIS) must be a redis://, rediss:// or unix:// "
                         "URL, e.g. redis://redis.internal:6379/0")
    if redis_url is not None and importlib.util.find_spec("redis") is None:
        raise UsageError("--redis needs the redis package (pip install 'tokios[redis]')")
    for option, seconds in (("--header-timeout", args.header_timeout),
                            ("--body-timeout", args.body_timeout)):
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_HTTP_TIMEOUT):
            raise UsageError(f"{option} must be more than 0 and at most "
                             f"{MAX_HTTP_TIMEOUT:g} seconds")
    if not MIN_MAX_HEADER_BYTES <= args.max_header_bytes <= MAX_MAX_HEADER_BYTES:
        raise UsageError(f"--max-header-bytes must be between {MIN_MAX_HEADER_BYTES} and "
                         f"{MAX_MAX_HEADER_BYTES}")
    return ServeOptions(
        data_dir=None if data_dir is None else Path(data_dir).absolute(),
        store_url=store_url, redis_url=redis_url, listen=listen,
        tls_cert=None if args.tls_cert is None else Path(args.tls_cert).absolute(),
        tls_key=None if args.tls_key is None else Path(args.tls_key).absolute(),
        insecure_http=args.insecure_http,
        allow_insecure_non_loopback=args.allow_insecure_non_loopback,
        tunnel_listen=tunnel_listen, loop=_resolve_loop(args.loop),
        grace_period=float(args.grace_period), max_body_bytes=args.max_body_bytes,
        log_level=args.log_level, log_format=args.log_format, metrics_listen=metrics_listen,
        metrics_token=metrics_token, usage_flush_interval=float(args.usage_flush_interval),
        workers=args.workers, node_listen=node_listen,
        node_url=args.node_url,
        node_ca=None if args.node_ca is None else Path(args.node_ca).absolute(),
        cluster_secret=cluster_secret,
        header_timeout=float(args.header_timeout), body_timeout=float(args.body_timeout),
        max_header_bytes=args.max_header_bytes,
        stream_silence_timeout=float(args.stream_silence_timeout),
    )


def _cluster_secret(args: argparse.Namespace) -> bytes | None:
    """The cluster secret from --cluster-secret-file or TOKIOS_CLUSTER_SECRET (None: none)."""
    if args.cluster_secret_file is not None:
        try:
            text = Path(args.cluster_secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--cluster-secret-file: cannot read it: {exc}") from None
    else:
        text = os.environ.get("TOKIOS_CLUSTER_SECRET", "").strip()
        if not text:
            return None
    if not 32 <= len(text) <= 1024 or not text.isascii() or not text.isprintable():
        raise UsageError("the cluster secret must be 32-1024 printable ASCII characters")
    return text.encode()


def _serve(args: argparse.Namespace, data_dir: str | None, store_url: str | None,
           argv: list[str]) -> int:
    options = serve_options(args, data_dir, store_url)
    if options.workers > 1 and worker_context() is None:
        return run_workers(options, argv, options.workers)
    try:
        server = importlib.import_module("runtimes.gateway.server")
    except ModuleNotFoundError as exc:
        if exc.name != "runtimes.gateway.server":
            raise
        sys.stderr.write("tokios-gateway: serve is not available: this build has no gateway "
                         "server (runtimes.gateway.server is missing)\n")
        return EXIT_USAGE
    return int(server.run(options))


# --- the parser --------------------------------------------------------------------------------

_DESCRIPTION = """\
Run the Tokios gateway and manage its tenants, deployments, API keys and connector tokens.

Admin commands read and write the store: SQLite in DIR/tokios.db (--data DIR, default
$TOKIOS_DATA), or PostgreSQL for a gateway of several nodes (--store postgresql://..., default
$TOKIOS_STORE). They may run while the gateway serves: a revocation takes effect within about a
second. Every command migrates an older schema first (`migrate` does only that).
The same commands are served over HTTPS at /admin/v1/... to admin keys (admin-key add);
`tunnels` asks running gateways that way for their live connectors.
With --json, stdout holds exactly one JSON object (on failure {"error": {"code", "message"}}).
Exit codes: 0 ok, 1 store failure, 2 usage, 3 not found, 4 already exists."""

#: The environment variable of each ``serve`` option that has one (by ``dest``): it overrides
#: the config file, and a flag overrides it. (``--data`` is TOKIOS_DATA and ``--store``
#: TOKIOS_STORE, for every command: see :func:`store_location`.)
ENVIRONMENT: dict[str, str] = {"metrics_token": "TOKIOS_METRICS_TOKEN", "redis": "TOKIOS_REDIS"}
CONFIG_ENV_VAR = "TOKIOS_CONFIG"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

_EPILOG = """\
config file:
  --config FILE (or TOKIOS_CONFIG), anywhere on the command line, reads options from a TOML
  file: `data` or `store` for every command, and serve's options, one key per long option
  without its dashes (listen = "0.0.0.0:443", tls-cert = "/etc/tokios/fullchain.pem",
  log-format = "json"). A flag, then an environment variable, win over the file.

store:
  SQLite in --data DIR by default; --store postgresql://USER@HOST:PORT/DATABASE (or
  TOKIOS_STORE) for PostgreSQL. Where both are set, the more direct one wins (a flag over an
  environment variable over the file); at the same level, --store.

examples:
  export TOKIOS_DATA=/var/lib/tokios
  tokios-gateway tenant add acme
  tokios-gateway deployment add acme gemma-tunnel
  tokios-gateway connector-token add acme --deployment gemma-tunnel --json
  tokios-gateway key add acme --name laptop --json      # all of acme's deployments
  tokios-gateway key list acme
  tokios-gateway key rotate key_abcdefghijkl --overlap 1h
  tokios-gateway key revoke key_abcdefghijkl
  tokios-gateway usage acme --since 7d --by day
  tokios-gateway admin-key add --operator --name ops   # for the admin HTTP API
  tokios-gateway tunnels --url https://gw.example.com  # with TOKIOS_ADMIN_KEY set
  tokios-gateway serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem"""


def _store_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """--data DIR and --store URL, the two places a store can be."""
    parser.add_argument("--data", metavar="DIR", default=default,
                        help="data directory holding tokios.db, the SQLite store (default: "
                             "$TOKIOS_DATA)")
    parser.add_argument("--store", metavar="URL", default=default,
                        help="the PostgreSQL store instead: postgresql://USER@HOST:PORT/"
                             "DATABASE (default: $TOKIOS_STORE; give the password in "
                             "$PGPASSWORD or ~/.pgpass, not in the URL)")


def _common_options(*, top_level: bool) -> _Parser:
    """--data, --store and --json. Below the top level their defaults are SUPPRESS, so a value
    given before the subcommand is not overwritten by the subcommand's default."""
    parent = _Parser(add_help=False)
    _store_options(parent, default=None if top_level else argparse.SUPPRESS)
    parent.add_argument("--json", action="store_true",
                        default=False if top_level else argparse.SUPPRESS,
                        help="print exactly one JSON object on stdout")
    return parent


def _add_command(group: Any, name: str, handler: AdminHandler, help_text: str,  # noqa: PLR0917
                 description: str, example: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name, help=help_text, description=textwrap.fill(description, 79),
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(top_level=False)])
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole ``tokios-gateway`` command line."""
    parser = _Parser(prog="tokios-gateway", description=_DESCRIPTION, epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     parents=[_common_options(top_level=True)])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="run the gateway (HTTPS API for clients, tunnel endpoint for connectors)",
        description="Serve the OpenAI/Anthropic API on --listen and accept connectors on "
                    "/v1/tunnel (or on --tunnel-listen). Runs until SIGTERM/SIGINT, then drains "
                    "for --grace-period seconds.",
        epilog="examples:\n  tokios-gateway serve --data /var/lib/tokios --listen 0.0.0.0:8443"
               " --tls-cert cert.pem --tls-key key.pem\n"
               "  tokios-gateway serve --data ./data --listen 127.0.0.1:8080 --insecure-http",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _store_options(serve, default=argparse.SUPPRESS)
    serve.add_argument("--listen", metavar="HOST:PORT", required=True,
                       help="address for clients (and connectors); [::1]:8443 for IPv6")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key")
    serve.add_argument("--insecure-http", action="store_true",
                       help="plain HTTP and ws:// instead of TLS; loopback addresses only")
    serve.add_argument("--allow-insecure-non-loopback", action="store_true",
                       help="insist on --insecure-http on a non-loopback address")
    serve.add_argument("--tunnel-listen", metavar="HOST:PORT",
                       help="a separate address for connectors (default: /v1/tunnel on --listen)")
    serve.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                       help="event loop (default auto: uvloop where installed)")
    serve.add_argument("--grace-period", metavar="SECONDS", type=float,
                       default=DEFAULT_GRACE_PERIOD,
                       help=f"on SIGTERM, time for in-flight streams to finish "
                            f"(default {DEFAULT_GRACE_PERIOD:g})")
    serve.add_argument("--stream-silence-timeout", metavar="SECONDS", type=float,
                       default=DEFAULT_STREAM_SILENCE_TIMEOUT,
                       help="a request whose connector sends nothing for it (head, body, "
                            "credit) for this long ends with 504 (default "
                            f"{DEFAULT_STREAM_SILENCE_TIMEOUT:g}; keep it above the "
                            "connectors' --first-byte-timeout)")
    serve.add_argument("--max-body-bytes", metavar="N", type=int,
                       default=DEFAULT_MAX_BODY_BYTES,
                       help=f"largest request body accepted, else 413 "
                            f"(default {DEFAULT_MAX_BODY_BYTES})")
    serve.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                       help="text lines (default) or one JSON object per line, each with the "
                            "request id the gateway also sends to the connector")
    serve.add_argument("--max-header-bytes", metavar="N", type=int,
                       default=DEFAULT_MAX_HEADER_BYTES,
                       help=f"largest request head (request line and headers), else 431 "
                            f"(default {DEFAULT_MAX_HEADER_BYTES})")
    serve.add_argument("--header-timeout", metavar="SECONDS", type=float,
                       default=DEFAULT_HEADER_TIMEOUT,
                       help=f"time to send a whole request head, and to finish the TLS "
                            f"handshake, else 408 (default {DEFAULT_HEADER_TIMEOUT:g})")
    serve.add_argument("--body-timeout", metavar="SECONDS", type=float,
                       default=DEFAULT_BODY_TIMEOUT,
                       help=f"longest wait for the next bytes of a request body, else 408 "
                            f"(default {DEFAULT_BODY_TIMEOUT:g})")
    serve.add_argument("--log-level", choices=LEVELS, default="info",
                       help="log verbosity (default info); no level logs a secret, a header "
                            "value, a query string, a prompt or a completion")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="serve GET /metrics (Prometheus) on this address only, to anyone "
                            "who reaches it (default: /metrics on --listen, to loopback "
                            "clients only unless --metrics-token is set)")
    serve.add_argument("--metrics-token", metavar="TOKEN",
                       help="/metrics asks for 'Authorization: Bearer TOKEN' (16-256 "
                            "characters; prefer $TOKIOS_METRICS_TOKEN: arguments show in ps)")
    serve.add_argument("--workers", metavar="N", type=int, default=1,
                       help="run N gateway processes on the same ports (SO_REUSEPORT), "
                            "cooperating as the nodes of one gateway (default 1; "
                            f"at most {MAX_WORKERS}); see docs/scaling.md")
    serve.add_argument("--node-listen", metavar="HOST:PORT",
                       help="make this process a node of a gateway of several: take the "
                            "requests other nodes forward here (TLS as --listen; needs "
                            "--cluster-secret-file or TOKIOS_CLUSTER_SECRET)")
    serve.add_argument("--node-url", metavar="URL",
                       help="the URL other nodes reach --node-listen at (default: its "
                            "address; needed when that is 0.0.0.0 or ::)")
    serve.add_argument("--node-ca", metavar="FILE",
                       help="trust this CA for the other nodes' certificates (default: the "
                            "system roots)")
    serve.add_argument("--cluster-secret-file", metavar="FILE",
                       help="the secret every node of this gateway shows the others (at "
                            "least 32 characters; or TOKIOS_CLUSTER_SECRET)")
    serve.add_argument("--usage-flush-interval", metavar="SECONDS", type=float,
                       default=DEFAULT_USAGE_FLUSH_INTERVAL,
                       help="how often token usage counted in memory is written to the store "
                            f"(default {DEFAULT_USAGE_FLUSH_INTERVAL:g}; also at shutdown)")
    serve.add_argument("--redis", metavar="URL",
                       help="Redis shared by the gateway's nodes (redis://HOST:PORT/DB, "
                            "rediss:// for TLS; prefer $TOKIOS_REDIS when it holds a "
                            "password): which node serves what, the per-minute limits of keys "
                            "and tenants and each deployment's --max-in-flight, across all "
                            "nodes together (default: a file in the data dir for the workers "
                            "of one machine; limits and caps counted in each process)")
    serve.set_defaults(handler=None)

    def group(name: str, help_text: str) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  parents=[_common_options(top_level=False)])
        return sub.add_subparsers(dest="action", metavar="ACTION", required=True)

    tenants = group("tenant", "create, list and limit tenants")
    _add_command(tenants, "add", admin.tenant_add, "create a tenant",
                 "Create a tenant. Prints its id; JSON: {id, name, created_at, rpm, tpm}. Names: "
                 "1-64 of A-Z a-z 0-9 . _ : -.", "tokios-gateway tenant add acme").add_argument(
        "name", metavar="NAME")
    _add_command(tenants, "list", admin.tenant_list, "list tenants",
                 'List tenants with their limits. JSON: {"tenants": [{id, name, created_at, '
                 "rpm, tpm}]}.", "tokios-gateway tenant list --json")
    change = _add_command(tenants, "set", admin.tenant_set, "set a tenant's limits",
                          "Limit the requests and tokens per minute of all the tenant's keys "
                          "together (each key may have its own limits too). Takes effect "
                          "within about a second. JSON: the tenant record.",
                          "tokios-gateway tenant set acme --rpm 600 --tpm 1000000")
    change.add_argument("name", metavar="NAME")
    _limit_options(change)

    deployments = group("deployment", "create, list and tune a tenant's deployments")
    for action, handler, text, example in (
            ("add", admin.deployment_add,
             "Create a deployment: the model name clients send. JSON: {id, name, tenant, "
             "tenant_id, created_at, max_in_flight, queue, queue_timeout} (null: default).",
             "tokios-gateway deployment add acme gemma-tunnel --max-in-flight 4"),
            ("set", admin.deployment_set,
             "Change a deployment's cap on requests in flight and its queue (takes effect "
             "within about a second). JSON: the deployment record.",
             "tokios-gateway deployment set acme gemma-tunnel --queue 64 --queue-timeout 2m")):
        command = _add_command(deployments, action, handler, f"{action} a deployment"
                               if action == "add" else "change a deployment's cap and queue",
                               text, example)
        command.add_argument("tenant", metavar="TENANT")
        command.add_argument("name", metavar="NAME")
        word = "none" if action == "add" else "none (no cap)"
        command.add_argument(
            "--max-in-flight", metavar="N", default=argparse.SUPPRESS,
            type=parse_limit, help="requests forwarded at once at most, whatever the "
            "connectors take; per gateway node, or across all nodes when the gateway runs "
            f"with --redis (default: their own limits only; or {word})")
        command.add_argument(
            "--queue", metavar="N", default=argparse.SUPPRESS, type=parse_count_or_default,
            help="requests that may wait for a free connector, fairly between keys (default "
                 f"{DEFAULT_QUEUE_SIZE}; 0: no waiting, 429 at once; 'default')")
        command.add_argument(
            "--queue-timeout", metavar="DURATION", default=argparse.SUPPRESS,
            type=parse_seconds_or_default, help="longest wait in the queue, then 503 "
            f"(default {DEFAULT_QUEUE_TIMEOUT:g}s; e.g. 90s, 2m; 'default')")
    _add_command(deployments, "list", admin.deployment_list, "list a tenant's deployments",
                 'List deployments. JSON: {"tenant", "deployments": [...]}.',
                 "tokios-gateway deployment list acme").add_argument("tenant", metavar="TENANT")

    tokens = group("connector-token", "create, list and revoke connector tokens")
    add = _add_command(tokens, "add", admin.token_add, "create a connector token",
                       "Create a token a connector uses to serve the given deployments. The "
                       "token (tkct-...) is shown once. JSON: {id, token, tenant, deployments, "
                       "prefix, ...}.",
                       "tokios-gateway connector-token add acme --deployment gemma-tunnel")
    add.add_argument("tenant", metavar="TENANT")
    add.add_argument("--deployment", dest="deployments", metavar="NAME", action="append",
                     required=True, help="a deployment it serves (repeat for several)")
    add.add_argument("--name", dest="label", metavar="LABEL", help="a label for listings")
    _add_command(tokens, "list", admin.token_list, "list a tenant's connector tokens",
                 'List tokens (never the secret). JSON: {"tenant", "connector_tokens": '
                 "[{id, prefix, name, deployments, created_at, last_used_at, revoked_at, "
                 "active}]}.",
                 "tokios-gateway connector-token list acme").add_argument(
        "tenant", metavar="TENANT")
    _add_command(tokens, "revoke", admin.token_revoke, "revoke a connector token",
                 "Revoke a token: new tunnels are refused and live ones closed, within about "
                 "a second. Idempotent. JSON: the token record with revoked: true.",
                 "tokios-gateway connector-token revoke tct_abcdefghijkl").add_argument(
        "token_id", metavar="TOKEN_ID")

    keys = group("key", "create, list, limit, rotate and revoke API keys")
    add = _add_command(keys, "add", admin.key_add, "create an API key",
                       "Create an API key (sk-tokios-...), shown once. Without --deployment it "
                       "may use all of the tenant's deployments, present and future. JSON: "
                       "{id, key, tenant, deployments (null = all), prefix, status, rpm, tpm, "
                       "expires_at, ...}.",
                       "tokios-gateway key add acme --deployment gemma-tunnel --name laptop "
                       "--rpm 60 --expires-in 90d")
    add.add_argument("tenant", metavar="TENANT")
    add.add_argument("--deployment", dest="deployments", metavar="NAME", action="append",
                     help="restrict the key to this deployment (repeat for several)")
    add.add_argument("--name", dest="label", metavar="LABEL", help="a label for listings")
    _limit_options(add)
    _expiry_options(add, clearable=False)
    _add_command(keys, "list", admin.key_list, "list a tenant's API keys",
                 'List keys (never the secret). JSON: {"tenant", "keys": [{id, prefix, name, '
                 "deployments, created_at, last_used_at, revoked_at, expires_at, rpm, tpm, "
                 "rotated_at, previous_secret_valid_until, status, active}]}.",
                 "tokios-gateway key list acme --json").add_argument("tenant", metavar="TENANT")
    change = _add_command(keys, "set", admin.key_set, "change a key's limits, expiry or "
                          "deployments",
                          "Change what a key may do; options not given stay as they are. "
                          "Takes effect within about a second. JSON: the key record.",
                          "tokios-gateway key set key_abcdefghijkl --rpm 120 --expires-in 30d")
    change.add_argument("key_id", metavar="KEY_ID")
    scope = change.add_mutually_exclusive_group()
    scope.add_argument("--deployment", dest="deployments", metavar="NAME", action="append",
                       help="restrict the key to exactly these deployments (repeat)")
    scope.add_argument("--all-deployments", action="store_true",
                       help="let the key use all of its tenant's deployments")
    _limit_options(change)
    _expiry_options(change, clearable=True)
    rotate = _add_command(keys, "rotate", admin.key_rotate, "give a key a new secret",
                          "Give the key a new secret (printed once; same id, deployments, limits "
                          "and usage). The old secret keeps working for --overlap, so clients "
                          "can switch without downtime; a secret older than that stops at "
                          "once. JSON: {id, key, previous_secret_valid_until, ...}.",
                          "tokios-gateway key rotate key_abcdefghijkl --overlap 1h")
    rotate.add_argument("key_id", metavar="KEY_ID")
    rotate.add_argument("--overlap", metavar="DURATION", type=parse_duration, default=3600.0,
                        help="how long the old secret keeps working (default 1h; 0: stops "
                             "now, e.g. after a leak)")
    _add_command(keys, "revoke", admin.key_revoke, "revoke an API key",
                 "Revoke a key: refused by the gateway within about a second. Idempotent. "
                 "JSON: the key record with revoked: true.",
                 "tokios-gateway key revoke key_abcdefghijkl").add_argument(
        "key_id", metavar="KEY_ID")

    admin_keys = group("admin-key", "create, list and revoke admin keys (the admin HTTP API)")
    add = _add_command(admin_keys, "add", admin.admin_key_add, "create an admin key",
                       "Create an admin key (tkadm-...) for the admin HTTP API "
                       "(/admin/v1/...), shown once: --operator for everything, or TENANT for "
                       "that tenant's objects only. Admin keys are not API keys and API keys "
                       "are not admin keys. JSON: {id, key, scope, tenant, tenant_id, name, "
                       "prefix, created_at, last_used_at, revoked_at, active}.",
                       "tokios-gateway admin-key add --operator --name ops")
    add.add_argument("tenant", metavar="TENANT", nargs="?",
                     help="the tenant a tenant admin key manages")
    add.add_argument("--operator", action="store_true",
                     help="an operator key: every tenant, tenants themselves, all usage")
    add.add_argument("--name", dest="label", metavar="LABEL", help="a label for listings")
    listing = _add_command(admin_keys, "list", admin.admin_key_list, "list admin keys",
                           'List admin keys (never the secret): all, one tenant\'s, or the '
                           'operator keys. JSON: {"admin_keys": [...]}.',
                           "tokios-gateway admin-key list --operator")
    listing.add_argument("tenant", metavar="TENANT", nargs="?", help="only this tenant's")
    listing.add_argument("--operator", action="store_true", help="only operator keys")
    _add_command(admin_keys, "revoke", admin.admin_key_revoke, "revoke an admin key",
                 "Revoke an admin key: refused within about a second. Idempotent. JSON: the "
                 "admin key record with revoked: true.",
                 "tokios-gateway admin-key revoke adm_abcdefghijkl").add_argument(
        "admin_key_id", metavar="ADMIN_KEY_ID")

    tunnels = commands.add_parser(
        "tunnels", help="list the live tunnels of running gateways",
        description=textwrap.fill(
            "List the connectors connected now: session, tenant, connector id and version, "
            "deployments and their upstream health, RTT, streams in flight and since when. "
            "Asks each gateway given by --url through its admin HTTP API "
            "(GET /admin/v1/tunnels) with an admin key: every node of a multi-node gateway "
            "knows its own tunnels, so give each node's URL. A tenant admin key lists its "
            'tenant\'s tunnels only. JSON: {"tunnels": [{gateway, session, tenant, '
            "connector_id, software_version, protocol_version, connector_token_id, "
            "deployments: [{name, healthy, reported, since, upstream_models}], healthy, "
            "rtt_seconds, streams_in_flight, max_streams, draining, connected_since}]}. "
            "Exit code 1 when a gateway cannot be asked.", 79),
        epilog="examples:\n  export TOKIOS_ADMIN_KEY=tkadm-...\n"
               "  tokios-gateway tunnels --url https://gw.example.com\n"
               "  tokios-gateway tunnels --url https://node1:8443 --url https://node2:8443 "
               "--json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(top_level=False)])
    tunnels.set_defaults(handler=None, client=admin_client.tunnels)
    tunnels.add_argument("--url", dest="urls", metavar="URL", action="append",
                         help="a gateway's https://HOST[:PORT] (repeat for each node; "
                              "default $TOKIOS_ADMIN_URL, space-separated)")
    tunnels.add_argument("--admin-key", metavar="KEY",
                         help="an admin key (prefer $TOKIOS_ADMIN_KEY: arguments show in ps)")
    tunnels.add_argument("--ca-file", metavar="FILE",
                         help="trust this CA's certificates (default: the system's roots)")
    tunnels.add_argument("--tenant", metavar="TENANT", help="only this tenant's tunnels")
    tunnels.add_argument("--timeout", metavar="SECONDS", type=float,
                         default=admin_client.DEFAULT_TIMEOUT,
                         help=f"per gateway (default {admin_client.DEFAULT_TIMEOUT:g})")

    usage = commands.add_parser(
        "usage", help="show token usage by key, deployment or day",
        description=textwrap.fill(
            "Token usage counted by the gateway from the connectors' reports (estimated when "
            "the backend gave none), kept per key, deployment and hour. The gateway writes "
            "it every --usage-flush-interval seconds (10 by default) and at shutdown. JSON: "
            '{"tenant", "key", "since", "by", "usage": [{tenant, key_id|deployment|day, '
            "requests, input_tokens, output_tokens, total_tokens, estimated_requests, "
            'estimated_input_tokens, estimated_output_tokens}], "total": {...}}.', 79),
        epilog="examples:\n  tokios-gateway usage acme --since 7d --by day\n"
               "  tokios-gateway usage --by deployment --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(top_level=False)])
    usage.set_defaults(handler=admin.usage)
    usage.add_argument("tenant", metavar="TENANT", nargs="?",
                       help="only this tenant (default: all)")
    usage.add_argument("--key", metavar="KEY_ID", help="only this key")
    usage.add_argument("--since", metavar="WHEN", type=parse_since,
                       help="from this time (2025-06-01, 2025-06-01T12:00Z) or this long ago "
                            "(24h, 7d); counted by the hour (default: everything)")
    usage.add_argument("--by", choices=("key", "deployment", "day"), default="key",
                       help="sum by key (default), deployment or UTC day")

    migrate = commands.add_parser(
        "migrate", help="bring the store's schema up to this version of tokios",
        description=textwrap.fill(
            "Create the store's tables, or migrate an older schema to the version this tokios "
            "uses, and print both versions. Every command (serve too) does this on start, so "
            "`migrate` is for doing it ahead of time: as the database owner, before the "
            "gateways start under a role that only reads and writes rows. Safe to run while "
            "gateways serve, and from several hosts at once (one migrates, the others wait; "
            "PostgreSQL: up to 30 s, then they refuse). A schema newer than this tokios is "
            "refused. JSON: {store, location, from_version, to_version, migrated}.", 79),
        epilog="examples:\n  tokios-gateway migrate --data /var/lib/tokios\n"
               "  tokios-gateway migrate --store postgresql://tokios_owner@db:5432/tokios "
               "--json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(top_level=False)])
    migrate.set_defaults(handler=admin.migrate)
    return parser


def _limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", metavar="N", type=parse_limit, default=argparse.SUPPRESS,
                        help="requests per minute at most ('none': no limit); more get 429 "
                             "with Retry-After")
    parser.add_argument("--tpm", metavar="N", type=parse_limit, default=argparse.SUPPRESS,
                        help="tokens (input + output) per minute at most ('none': no limit); "
                             "counted from usage reports, so a request may overshoot and the "
                             "next ones wait")


def _expiry_options(parser: argparse.ArgumentParser, *, clearable: bool) -> None:
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", metavar="DURATION", type=parse_duration,
                        help="stop working this long from now (e.g. 30d, 12h, 2w)")
    expiry.add_argument("--expires-at", metavar="TIME", type=parse_time,
                        help="stop working at this time (2025-12-31, 2025-12-31T18:00Z; "
                             "UTC unless an offset is given)")
    if clearable:
        expiry.add_argument("--no-expiry", action="store_true", help="never expire")


# --- main --------------------------------------------------------------------------------------


def _fail(code: str, message: str, exit_code: int, *, as_json: bool, usage: str = "") -> int:
    if usage:
        sys.stderr.write(usage)
    shown = message if message.startswith("tokios-gateway") else f"tokios-gateway: {message}"
    sys.stderr.write(shown + "\n")
    if as_json:
        sys.stdout.write(orjson.dumps({"error": {"code": code, "message": message}}).decode()
                         + "\n")
    return exit_code


_EXIT_CODES: dict[type[StoreError], tuple[int, str]] = {
    NotFound: (EXIT_NOT_FOUND, "not_found"),
    AlreadyExists: (EXIT_ALREADY_EXISTS, "already_exists"),
    InvalidName: (EXIT_USAGE, "invalid"),
}


def _serve_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            serve: argparse.ArgumentParser = action.choices["serve"]
            return serve
    raise LookupError("serve")


def store_location(args: argparse.Namespace, config: dict[str, str | None]
                   ) -> tuple[str | None, str | None]:
    """(data directory, PostgreSQL URL) for the command: the flag, then the environment
    (TOKIOS_DATA, TOKIOS_STORE), then the config file, decide; at the first level that names a
    store, a URL wins over a directory. The data directory found is returned alongside a URL
    (the gateway may keep other files there). UsageError for a --store that is no URL."""
    levels = ((getattr(args, "store", None), getattr(args, "data", None)),
              (os.environ.get("TOKIOS_STORE"), os.environ.get("TOKIOS_DATA")),
              (config.get("store"), config.get("data")))
    data_dir = next((data for _, data in levels if data), None)
    for url, data in levels:
        if url:
            if not is_postgres_url(url):
                raise UsageError("--store (or TOKIOS_STORE, or `store` in the config file) "
                                 "takes a postgresql://USER@HOST:PORT/DATABASE URL; for "
                                 "SQLite give --data DIR")
            return data_dir, url
        if data:
            return data, None
    raise UsageError("no store: pass --data DIR (SQLite) or --store postgresql://... "
                     "(or set TOKIOS_DATA / TOKIOS_STORE)")


def _client(args: argparse.Namespace, *, as_json: bool) -> int:
    """A command that asks running gateways (``tunnels``) instead of opening the store."""
    args.urls = args.urls or os.environ.get("TOKIOS_ADMIN_URL", "").split()
    args.admin_key = args.admin_key or os.environ.get("TOKIOS_ADMIN_KEY") or None
    if not args.urls:
        return _fail("usage", "no gateway to ask: pass --url https://HOST[:PORT] (or set "
                     "TOKIOS_ADMIN_URL)", EXIT_USAGE, as_json=as_json)
    if args.admin_key is None:
        return _fail("usage", "no admin key: set TOKIOS_ADMIN_KEY (or pass --admin-key); "
                     "`tokios-gateway admin-key add --operator` makes one", EXIT_USAGE,
                     as_json=as_json)
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= 300):
        return _fail("usage", "--timeout must be between 0 and 300 seconds", EXIT_USAGE,
                     as_json=as_json)
    try:
        result = args.client(args)
    except admin_client.AdminApiError as exc:
        return _fail(exc.code, str(exc), EXIT_USAGE if exc.code == "usage" else EXIT_FAILURE,
                     as_json=as_json)
    sys.stdout.write((orjson.dumps(result.data).decode() if as_json
                      else result.text.rstrip("\n")) + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tokios-gateway`` with ``argv`` (default sys.argv[1:]); return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    original = list(arguments)  # what worker processes are started with
    as_json = "--json" in arguments and "serve" not in arguments[:1]
    parser = build_parser()
    config_store: dict[str, str | None] = {}
    config_redis: object = None
    try:
        arguments, config_path = take_config_argument(arguments, env_var=CONFIG_ENV_VAR)
        if config_path is not None:
            table = read_config(config_path)
            for name in ("data", "store"):  # for every command, not only serve
                value = table.pop(name, None)
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"{config_path}: option `{name}` must be a string")
                config_store[name] = value
            config_redis = table.get("redis")
            apply_config(table, config_path, [_serve_parser(parser)],
                         environment=ENVIRONMENT)
    except ConfigError as exc:
        return _fail("usage", str(exc), EXIT_USAGE, as_json=as_json)
    try:
        args = parser.parse_args(arguments)
    except UsageError as exc:
        return _fail("usage", str(exc), EXIT_USAGE, as_json=as_json, usage=exc.usage)
    as_json = bool(getattr(args, "json", False))
    if getattr(args, "client", None) is not None:
        return _client(args, as_json=as_json)
    try:
        data_dir, store_url = store_location(args, config_store)
    except UsageError as exc:
        return _fail("usage", str(exc), EXIT_USAGE, as_json=as_json)
    if args.handler is None:
        try:
            return _serve(args, data_dir, store_url, original)
        except UsageError as exc:
            return _fail("usage", str(exc), EXIT_USAGE, as_json=False)
    handler: AdminHandler = args.handler
    try:
        with open_store(store_url or str(data_dir), create=handler in CREATING) as store:
            result = handler(store, args)
    except StoreError as exc:
        exit_code, code = _EXIT_CODES.get(type(exc), (EXIT_FAILURE, exc.code))
        return _fail(code, str(exc), exit_code, as_json=as_json)
    if result.revoked is not None:
        _announce_revocation(result.revoked, config_redis)
    if as_json:
        sys.stdout.write(orjson.dumps(result.data).decode() + "\n")
    else:
        sys.stdout.write(result.text.rstrip("\n") + "\n")
    return EXIT_OK


def _announce_revocation(revoked: tuple[str, str], config_redis: object) -> None:
    """With Redis (``TOKIOS_REDIS`` or the config file's ``redis``), tell the running gateway's
    nodes at once (runtimes/cluster/revocations.py); without, or when Redis cannot be reached
    (a warning), they see it in the store within about a second."""
    url = os.environ.get("TOKIOS_REDIS") or (config_redis if isinstance(config_redis, str)
                                             else None)
    if not url or not url.startswith(REDIS_SCHEMES) \
            or importlib.util.find_spec("redis") is None:
        return
    announce_once(url, notice_for(*revoked))


if __name__ == "__main__":
    sys.exit(main())
