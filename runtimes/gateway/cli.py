"""``tokios-gateway``: the server (``serve``) and the admin commands on the tenant store.

This is a contract scripts depend on (see docs/operations.md):

- Every admin command takes ``--data DIR`` (default ``$TOKIOS_DATA``) and ``--json``, before or
  after its arguments.
- With ``--json`` stdout holds exactly one JSON object: the result, or on failure
  ``{"error": {"code": ..., "message": ...}}``. The message also goes to stderr.
- Exit codes: 0 success, 1 store or database failure, 2 usage (bad arguments, invalid name, no
  data directory), 3 not found, 4 already exists.

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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import orjson

from runtimes.config import ConfigError, apply_config, read_config, take_config_argument
from runtimes.gateway.options import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_BODY_BYTES,
    MAX_GRACE_PERIOD,
    MAX_MAX_BODY_BYTES,
    MIN_MAX_BODY_BYTES,
    ListenAddress,
    LoopName,
    ServeOptions,
    parse_listen_address,
)
from runtimes.logs import LEVELS, LOG_FORMATS
from runtimes.store import (
    AlreadyExists,
    ApiKeyInfo,
    ConnectorTokenInfo,
    Deployment,
    InvalidName,
    NotFound,
    SqliteStore,
    StoreError,
    Tenant,
    open_store,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_ALREADY_EXISTS = 4

ONCE_WARNING = "Shown only once: store it now. Only its hash is kept; it cannot be recovered."


class UsageError(Exception):
    """A bad command line; ``usage`` is the relevant usage line."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so --json can report it."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}", self.format_usage())


# --- output ------------------------------------------------------------------------------------


def _time(timestamp: float | None) -> str | None:
    """RFC 3339 UTC with seconds, e.g. 2025-01-31T12:00:00Z."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "created_at": _time(tenant.created_at)}


def _deployment_json(deployment: Deployment, tenant: str) -> dict[str, Any]:
    return {"id": deployment.id, "name": deployment.name, "tenant": tenant,
            "tenant_id": deployment.tenant_id, "created_at": _time(deployment.created_at)}


def _credential_json(info: ApiKeyInfo | ConnectorTokenInfo) -> dict[str, Any]:
    return {
        "id": info.id, "tenant_id": info.tenant_id, "name": info.name, "prefix": info.prefix,
        "deployments": None if info.deployments is None else list(info.deployments),
        "created_at": _time(info.created_at), "last_used_at": _time(info.last_used_at),
        "revoked_at": _time(info.revoked_at), "active": info.revoked_at is None,
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows,
                                                                       strict=False)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in (headers, *rows)]
    return "\n".join(lines)


def _credential_rows(infos: Sequence[ApiKeyInfo | ConnectorTokenInfo]) -> list[list[str]]:
    return [[info.id, info.prefix + "_…", info.name or "-",
             "all" if info.deployments is None else ",".join(info.deployments),
             _time(info.created_at) or "-", _time(info.last_used_at) or "never",
             "active" if info.revoked_at is None else f"revoked {_time(info.revoked_at)}"]
            for info in infos]


_CREDENTIAL_HEADERS = ("ID", "PREFIX", "NAME", "DEPLOYMENTS", "CREATED", "LAST USED", "STATUS")


class Result:
    """What a command produced: one JSON object and its human-readable form."""

    def __init__(self, data: dict[str, Any], text: str) -> None:
        self.data = data
        self.text = text


# --- admin commands ----------------------------------------------------------------------------


def _tenant_add(store: SqliteStore, args: argparse.Namespace) -> Result:
    tenant = store.add_tenant(args.name)
    return Result(_tenant_json(tenant), f"Created tenant {tenant.name} ({tenant.id}).")


def _tenant_list(store: SqliteStore, args: argparse.Namespace) -> Result:
    tenants = store.list_tenants()
    text = _table(("NAME", "ID", "CREATED"),
                  [[t.name, t.id, _time(t.created_at) or "-"] for t in tenants]) \
        if tenants else "No tenants."
    return Result({"tenants": [_tenant_json(t) for t in tenants]}, text)


def _deployment_add(store: SqliteStore, args: argparse.Namespace) -> Result:
    deployment = store.add_deployment(args.tenant, args.name)
    return Result(_deployment_json(deployment, args.tenant),
                  f"Created deployment {deployment.name} ({deployment.id}) "
                  f"in tenant {args.tenant}.")


def _deployment_list(store: SqliteStore, args: argparse.Namespace) -> Result:
    deployments = store.list_deployments(args.tenant)
    text = _table(("NAME", "ID", "CREATED"),
                  [[d.name, d.id, _time(d.created_at) or "-"] for d in deployments]) \
        if deployments else f"Tenant {args.tenant} has no deployments."
    return Result({"tenant": args.tenant,
                   "deployments": [_deployment_json(d, args.tenant) for d in deployments]}, text)


def _key_add(store: SqliteStore, args: argparse.Namespace) -> Result:
    info, secret = store.add_key(args.tenant, args.deployments, args.label)
    scope = "all deployments" if info.deployments is None \
        else "deployments " + ", ".join(info.deployments)
    data = {"id": info.id, "key": secret, "tenant": args.tenant, **_credential_json(info)}
    return Result(data, f"Created API key {info.id} for tenant {args.tenant} ({scope}).\n"
                        f"{ONCE_WARNING}\n\n    {secret}\n")


def _key_list(store: SqliteStore, args: argparse.Namespace) -> Result:
    keys = store.list_keys(args.tenant)
    text = _table(_CREDENTIAL_HEADERS, _credential_rows(keys)) if keys \
        else f"Tenant {args.tenant} has no API keys."
    return Result({"tenant": args.tenant, "keys": [_credential_json(k) for k in keys]}, text)


def _key_revoke(store: SqliteStore, args: argparse.Namespace) -> Result:
    info = store.revoke_key(args.key_id)
    return Result({**_credential_json(info), "revoked": True},
                  f"Revoked API key {info.id} (at {_time(info.revoked_at)}).")


def _token_add(store: SqliteStore, args: argparse.Namespace) -> Result:
    info, secret = store.add_connector_token(args.tenant, args.deployments, args.label)
    data = {"id": info.id, "token": secret, "tenant": args.tenant, **_credential_json(info)}
    return Result(data, f"Created connector token {info.id} for tenant {args.tenant} "
                        f"(deployments {', '.join(info.deployments)}).\n"
                        f"{ONCE_WARNING}\n\n    {secret}\n")


def _token_list(store: SqliteStore, args: argparse.Namespace) -> Result:
    tokens = store.list_connector_tokens(args.tenant)
    text = _table(_CREDENTIAL_HEADERS, _credential_rows(tokens)) if tokens \
        else f"Tenant {args.tenant} has no connector tokens."
    return Result({"tenant": args.tenant,
                   "connector_tokens": [_credential_json(t) for t in tokens]}, text)


def _token_revoke(store: SqliteStore, args: argparse.Namespace) -> Result:
    info = store.revoke_connector_token(args.token_id)
    return Result({**_credential_json(info), "revoked": True},
                  f"Revoked connector token {info.id} (at {_time(info.revoked_at)}); "
                  "the gateway closes its live tunnels within about a second.")


AdminHandler = Callable[[SqliteStore, argparse.Namespace], Result]
#: Commands that may create the data directory and database; the others need them to exist.
_CREATING = frozenset({_tenant_add})


# --- serve -------------------------------------------------------------------------------------


def _resolve_loop(requested: str) -> LoopName:
    installed = importlib.util.find_spec("uvloop") is not None
    if requested == "uvloop" and not installed:
        raise UsageError("--loop uvloop: uvloop is not installed (pip install 'tokios[uvloop]')")
    if requested == "asyncio":
        return "asyncio"
    return "uvloop" if installed else "asyncio"


def serve_options(args: argparse.Namespace, data_dir: str) -> ServeOptions:
    """Validate ``serve``'s arguments into ServeOptions; raise UsageError with the reason."""
    def address(option: str, text: str) -> ListenAddress:
        try:
            return parse_listen_address(text)
        except ValueError as exc:
            raise UsageError(f"{option}: {exc}") from exc

    listen = address("--listen", args.listen)
    tunnel_listen = None if args.tunnel_listen is None \
        else address("--tunnel-listen", args.tunnel_listen)
    if tunnel_listen is not None and tunnel_listen == listen and listen.port != 0:
        raise UsageError("--tunnel-listen must differ from --listen "
                         "(omit it to serve /v1/tunnel on the same port)")
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
        for option, where in (("--listen", listen), ("--tunnel-listen", tunnel_listen)):
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
    if not MIN_MAX_BODY_BYTES <= args.max_body_bytes <= MAX_MAX_BODY_BYTES:
        raise UsageError(f"--max-body-bytes must be between {MIN_MAX_BODY_BYTES} and "
                         f"{MAX_MAX_BODY_BYTES}")
    return ServeOptions(
        data_dir=Path(data_dir).absolute(), listen=listen,
        tls_cert=None if args.tls_cert is None else Path(args.tls_cert).absolute(),
        tls_key=None if args.tls_key is None else Path(args.tls_key).absolute(),
        insecure_http=args.insecure_http,
        allow_insecure_non_loopback=args.allow_insecure_non_loopback,
        tunnel_listen=tunnel_listen, loop=_resolve_loop(args.loop),
        grace_period=float(args.grace_period), max_body_bytes=args.max_body_bytes,
        log_level=args.log_level, log_format=args.log_format,
    )


def _serve(args: argparse.Namespace, data_dir: str) -> int:
    options = serve_options(args, data_dir)
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

Admin commands read and write the store in DIR/tokios.db (--data DIR, default $TOKIOS_DATA).
They may run while the gateway serves: a revocation takes effect within about a second.
With --json, stdout holds exactly one JSON object (on failure {"error": {"code", "message"}}).
Exit codes: 0 ok, 1 store failure, 2 usage, 3 not found, 4 already exists."""

#: The environment variable of each ``serve`` option that has one (by ``dest``): it overrides
#: the config file, and a flag overrides it. (``--data`` is TOKIOS_DATA, for every command.)
ENVIRONMENT: dict[str, str] = {}
CONFIG_ENV_VAR = "TOKIOS_CONFIG"

_EPILOG = """\
config file:
  --config FILE (or TOKIOS_CONFIG), anywhere on the command line, reads options from a TOML
  file: `data` for every command, and serve's options, one key per long option without its
  dashes (listen = "0.0.0.0:443", tls-cert = "/etc/tokios/fullchain.pem",
  log-format = "json"). A flag, then an environment variable, win over the file.

examples:
  export TOKIOS_DATA=/var/lib/tokios
  tokios-gateway tenant add acme
  tokios-gateway deployment add acme gemma-tunnel
  tokios-gateway connector-token add acme --deployment gemma-tunnel --json
  tokios-gateway key add acme --name laptop --json      # all of acme's deployments
  tokios-gateway key list acme
  tokios-gateway key revoke key_abcdefghijkl
  tokios-gateway serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem"""


def _common_options(*, top_level: bool) -> _Parser:
    """--data and --json. Below the top level their defaults are SUPPRESS, so a value given
    before the subcommand is not overwritten by the subcommand's default."""
    parent = _Parser(add_help=False)
    parent.add_argument("--data", metavar="DIR",
                        default=None if top_level else argparse.SUPPRESS,
                        help="data directory holding tokios.db (default: $TOKIOS_DATA)")
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
    serve.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS,
                       help="data directory holding tokios.db (default: $TOKIOS_DATA)")
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
    serve.add_argument("--max-body-bytes", metavar="N", type=int,
                       default=DEFAULT_MAX_BODY_BYTES,
                       help=f"largest request body accepted, else 413 "
                            f"(default {DEFAULT_MAX_BODY_BYTES})")
    serve.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                       help="text lines (default) or one JSON object per line, each with the "
                            "request id the gateway also sends to the connector")
    serve.add_argument("--log-level", choices=LEVELS, default="info",
                       help="log verbosity (default info); no level logs a secret, a header "
                            "value, a query string, a prompt or a completion")
    serve.set_defaults(handler=None)

    def group(name: str, help_text: str) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  parents=[_common_options(top_level=False)])
        return sub.add_subparsers(dest="action", metavar="ACTION", required=True)

    tenants = group("tenant", "create and list tenants")
    _add_command(tenants, "add", _tenant_add, "create a tenant",
                 "Create a tenant. Prints its id; JSON: {id, name, created_at}. Names: 1-64 of "
                 "A-Z a-z 0-9 . _ : -.", "tokios-gateway tenant add acme").add_argument(
        "name", metavar="NAME")
    _add_command(tenants, "list", _tenant_list, "list tenants",
                 'List tenants. JSON: {"tenants": [{id, name, created_at}]}.',
                 "tokios-gateway tenant list --json")

    deployments = group("deployment", "create and list a tenant's deployments")
    add = _add_command(deployments, "add", _deployment_add, "create a deployment",
                       "Create a deployment: the model name clients send. JSON: {id, name, "
                       "tenant, tenant_id, created_at}.",
                       "tokios-gateway deployment add acme gemma-tunnel")
    add.add_argument("tenant", metavar="TENANT")
    add.add_argument("name", metavar="NAME")
    _add_command(deployments, "list", _deployment_list, "list a tenant's deployments",
                 'List deployments. JSON: {"tenant", "deployments": [...]}.',
                 "tokios-gateway deployment list acme").add_argument("tenant", metavar="TENANT")

    tokens = group("connector-token", "create, list and revoke connector tokens")
    add = _add_command(tokens, "add", _token_add, "create a connector token",
                       "Create a token a connector uses to serve the given deployments. The "
                       "token (tkct-...) is shown once. JSON: {id, token, tenant, deployments, "
                       "prefix, ...}.",
                       "tokios-gateway connector-token add acme --deployment gemma-tunnel")
    add.add_argument("tenant", metavar="TENANT")
    add.add_argument("--deployment", dest="deployments", metavar="NAME", action="append",
                     required=True, help="a deployment it serves (repeat for several)")
    add.add_argument("--name", dest="label", metavar="LABEL", help="a label for listings")
    _add_command(tokens, "list", _token_list, "list a tenant's connector tokens",
                 'List tokens (never the secret). JSON: {"tenant", "connector_tokens": '
                 "[{id, prefix, name, deployments, created_at, last_used_at, revoked_at, "
                 "active}]}.",
                 "tokios-gateway connector-token list acme").add_argument(
        "tenant", metavar="TENANT")
    _add_command(tokens, "revoke", _token_revoke, "revoke a connector token",
                 "Revoke a token: new tunnels are refused and live ones closed, within about "
                 "a second. Idempotent. JSON: the token record with revoked: true.",
                 "tokios-gateway connector-token revoke tct_abcdefghijkl").add_argument(
        "token_id", metavar="TOKEN_ID")

    keys = group("key", "create, list and revoke API keys")
    add = _add_command(keys, "add", _key_add, "create an API key",
                       "Create an API key (sk-tokios-...), shown once. Without --deployment it "
                       "may use all of the tenant's deployments, present and future. JSON: "
                       "{id, key, tenant, deployments (null = all), prefix, ...}.",
                       "tokios-gateway key add acme --deployment gemma-tunnel --name laptop")
    add.add_argument("tenant", metavar="TENANT")
    add.add_argument("--deployment", dest="deployments", metavar="NAME", action="append",
                     help="restrict the key to this deployment (repeat for several)")
    add.add_argument("--name", dest="label", metavar="LABEL", help="a label for listings")
    _add_command(keys, "list", _key_list, "list a tenant's API keys",
                 'List keys (never the secret). JSON: {"tenant", "keys": [{id, prefix, name, '
                 "deployments, created_at, last_used_at, revoked_at, active}]}.",
                 "tokios-gateway key list acme --json").add_argument("tenant", metavar="TENANT")
    _add_command(keys, "revoke", _key_revoke, "revoke an API key",
                 "Revoke a key: refused by the gateway within about a second. Idempotent. "
                 "JSON: the key record with revoked: true.",
                 "tokios-gateway key revoke key_abcdefghijkl").add_argument(
        "key_id", metavar="KEY_ID")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tokios-gateway`` with ``argv`` (default sys.argv[1:]); return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in arguments and "serve" not in arguments[:1]
    parser = build_parser()
    config_data: str | None = None
    try:
        arguments, config_path = take_config_argument(arguments, env_var=CONFIG_ENV_VAR)
        if config_path is not None:
            table = read_config(config_path)
            value = table.pop("data", None)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{config_path}: option `data` must be a string")
            config_data = value
            apply_config(table, config_path, [_serve_parser(parser)],
                         environment=ENVIRONMENT)
    except ConfigError as exc:
        return _fail("usage", str(exc), EXIT_USAGE, as_json=as_json)
    try:
        args = parser.parse_args(arguments)
    except UsageError as exc:
        return _fail("usage", str(exc), EXIT_USAGE, as_json=as_json, usage=exc.usage)
    as_json = bool(getattr(args, "json", False))
    data_dir = args.data or os.environ.get("TOKIOS_DATA") or config_data or None
    if data_dir is None:
        return _fail("usage", "no data directory: pass --data DIR or set TOKIOS_DATA",
                     EXIT_USAGE, as_json=as_json)
    if args.handler is None:
        try:
            return _serve(args, data_dir)
        except UsageError as exc:
            return _fail("usage", str(exc), EXIT_USAGE, as_json=False)
    handler: AdminHandler = args.handler
    try:
        with open_store(data_dir, create=handler in _CREATING) as store:
            result = handler(store, args)
    except StoreError as exc:
        exit_code, code = _EXIT_CODES.get(type(exc), (EXIT_FAILURE, exc.code))
        return _fail(code, str(exc), exit_code, as_json=as_json)
    if as_json:
        sys.stdout.write(orjson.dumps(result.data).decode() + "\n")
    else:
        sys.stdout.write(result.text.rstrip("\n") + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
