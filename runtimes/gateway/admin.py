"""The admin commands of ``tokios-gateway`` (tenants, deployments, keys, tokens, usage, admin
keys, the schema migration): each takes the open store and the parsed arguments and returns a
:class:`Result` (one JSON object and its text form). ``runtimes.gateway.cli`` parses the command
line and prints the result; the admin HTTP API (``runtimes.gateway.admin_api``) calls the same
commands with arguments made from a JSON body, so both answer with the same JSON.

Also the parsers of the values those commands take: durations (``30d``, ``1h30m``), times
(``2025-12-31``, ``2025-12-31T12:00:00Z``), limits (a number or ``none``).
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from runtimes.store import (
    KEEP,
    AdminKeyInfo,
    ApiKeyInfo,
    ConnectorTokenInfo,
    Deployment,
    InvalidName,
    PostgresStore,
    SqlStore,
    Store,
    Tenant,
    UsageTotal,
)

ONCE_WARNING = "Shown only once: store it now. Only its hash is kept; it cannot be recovered."

# --- values ------------------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+|\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
#: The longest duration accepted anywhere (ten years).
MAX_DURATION = 10 * 366 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``1h30m``, ``90s``, ``2w`` or a plain number of seconds."""
    text = text.strip().lower()
    if len(text) > 40 or not _DURATION.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a duration: use a number with a unit, s m h d w "
            "(e.g. 90s, 30m, 1h30m, 30d), or seconds")
    if text[-1].isdigit():
        seconds = float(text)
    else:
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than ten years")
    return seconds


def parse_time(text: str) -> float:
    """Unix seconds of an ISO 8601 date or time (``2025-12-31``, ``2025-12-31T12:00``,
    ``2025-12-31T12:00:00Z``, ``...+02:00``); without an offset it is UTC."""
    try:
        when = datetime.fromisoformat(text.strip()[:40])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a date or time: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] "
            "with Z or an offset (UTC without)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_since(text: str) -> float:
    """``--since``: a time (see :func:`parse_time`) or a duration ago (``24h``, ``7d``)."""
    try:
        return time.time() - parse_duration(text)
    except argparse.ArgumentTypeError:
        return parse_time(text)


def parse_limit(text: str) -> int | None:
    """A whole number of at least 1, or ``none`` (no limit)."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a whole number of at least 1, "
                                         "or none")
    return int(text)


def parse_count_or_default(text: str) -> int | None:
    """A whole number of at least 0, or ``default`` (None)."""
    if text.strip().lower() == "default":
        return None
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a whole number, or default")
    return int(text)


def parse_seconds_or_default(text: str) -> float | None:
    """A duration (see :func:`parse_duration`), or ``default`` (None)."""
    return None if text.strip().lower() == "default" else parse_duration(text)


# --- output ------------------------------------------------------------------------------------


def time_text(timestamp: float | None) -> str | None:
    """RFC 3339 UTC with seconds, e.g. 2025-01-31T12:00:00Z."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _limit_text(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "created_at": time_text(tenant.created_at),
            "rpm": tenant.rpm, "tpm": tenant.tpm}


def deployment_json(deployment: Deployment, tenant: str) -> dict[str, Any]:
    return {"id": deployment.id, "name": deployment.name, "tenant": tenant,
            "tenant_id": deployment.tenant_id, "created_at": time_text(deployment.created_at),
            "max_in_flight": deployment.max_in_flight, "queue": deployment.queue_size,
            "queue_timeout": deployment.queue_timeout}


def credential_json(info: ApiKeyInfo | ConnectorTokenInfo) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": info.id, "tenant_id": info.tenant_id, "name": info.name, "prefix": info.prefix,
        "deployments": None if info.deployments is None else list(info.deployments),
        "created_at": time_text(info.created_at), "last_used_at": time_text(info.last_used_at),
        "revoked_at": time_text(info.revoked_at), "active": info.revoked_at is None,
    }
    if isinstance(info, ApiKeyInfo):
        now = time.time()
        overlap = info.previous_valid_until
        data.update({
            "status": info.status(now), "active": info.status(now) == "active",
            "expires_at": time_text(info.expires_at), "rpm": info.rpm, "tpm": info.tpm,
            "rotated_at": time_text(info.rotated_at),
            "previous_secret_valid_until": time_text(overlap)
            if overlap is not None and overlap > now else None,
        })
    return data


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows,
                                                                       strict=False)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in (headers, *rows)]
    return "\n".join(lines)


def _status_text(info: ApiKeyInfo | ConnectorTokenInfo | AdminKeyInfo, now: float) -> str:
    if info.revoked_at is not None:
        return f"revoked {time_text(info.revoked_at)}"
    if isinstance(info, ApiKeyInfo):
        if info.status(now) == "expired":
            return f"expired {time_text(info.expires_at)}"
        if info.previous_valid_until is not None and info.previous_valid_until > now:
            return f"active (old secret until {time_text(info.previous_valid_until)})"
    return "active"


def _credential_rows(infos: Sequence[ApiKeyInfo | ConnectorTokenInfo]) -> list[list[str]]:
    now = time.time()
    return [[info.id, info.prefix + "_…", info.name or "-",
             "all" if info.deployments is None else ",".join(info.deployments),
             time_text(info.created_at) or "-", time_text(info.last_used_at) or "never",
             _status_text(info, now)]
            for info in infos]


_CREDENTIAL_HEADERS = ("ID", "PREFIX", "NAME", "DEPLOYMENTS", "CREATED", "LAST USED", "STATUS")


class Result:
    """What a command produced: one JSON object and its human-readable form; ``revoked``: the
    credential it revoked, as (kind, id), which the CLI announces to the gateway's nodes."""

    def __init__(self, data: dict[str, Any], text: str, *,
                 revoked: tuple[str, str] | None = None) -> None:
        self.data = data
        self.text = text
        self.revoked = revoked


# --- tenants and deployments -------------------------------------------------------------------


def tenant_add(store: Store, args: argparse.Namespace) -> Result:
    tenant = store.add_tenant(args.name)
    return Result(tenant_json(tenant), f"Created tenant {tenant.name} ({tenant.id}).")


def tenant_list(store: Store, args: argparse.Namespace) -> Result:
    tenants = store.list_tenants()
    text = table(("NAME", "ID", "CREATED", "RPM", "TPM"),
                 [[t.name, t.id, time_text(t.created_at) or "-", _limit_text(t.rpm),
                   _limit_text(t.tpm)] for t in tenants]) if tenants else "No tenants."
    return Result({"tenants": [tenant_json(t) for t in tenants]}, text)


def tenant_set(store: Store, args: argparse.Namespace) -> Result:
    tenant = store.set_tenant_limits(args.name, rpm=_given(args, "rpm"),
                                     tpm=_given(args, "tpm"))
    return Result(tenant_json(tenant), f"Tenant {tenant.name}: requests per minute "
                                        f"{_limit_text(tenant.rpm)}, tokens per minute "
                                        f"{_limit_text(tenant.tpm)} (- = no limit).")


def _given(args: argparse.Namespace, name: str) -> Any:
    """The option's value, or KEEP when it was not given."""
    return getattr(args, name, KEEP)


def _deployment_text(deployment: Deployment) -> str:
    return (f"max in flight {_limit_text(deployment.max_in_flight)}, queue "
            f"{_limit_text(deployment.queue_size)}, queue timeout "
            f"{_limit_text(deployment.queue_timeout, 's')} (- = default)")


def deployment_add(store: Store, args: argparse.Namespace) -> Result:
    deployment = store.add_deployment(
        args.tenant, args.name, max_in_flight=getattr(args, "max_in_flight", None),
        queue_size=getattr(args, "queue", None),
        queue_timeout=getattr(args, "queue_timeout", None))
    return Result(deployment_json(deployment, args.tenant),
                  f"Created deployment {deployment.name} ({deployment.id}) "
                  f"in tenant {args.tenant}: {_deployment_text(deployment)}.")


def deployment_set(store: Store, args: argparse.Namespace) -> Result:
    deployment = store.set_deployment(
        args.tenant, args.name, max_in_flight=_given(args, "max_in_flight"),
        queue_size=_given(args, "queue"), queue_timeout=_given(args, "queue_timeout"))
    return Result(deployment_json(deployment, args.tenant),
                  f"Deployment {deployment.name} of {args.tenant}: "
                  f"{_deployment_text(deployment)}.")


def deployment_list(store: Store, args: argparse.Namespace) -> Result:
    deployments = store.list_deployments(args.tenant)
    text = table(("NAME", "ID", "CREATED", "MAX IN FLIGHT", "QUEUE", "QUEUE TIMEOUT"),
                 [[d.name, d.id, time_text(d.created_at) or "-", _limit_text(d.max_in_flight),
                   _limit_text(d.queue_size), _limit_text(d.queue_timeout, "s")]
                  for d in deployments]) \
        if deployments else f"Tenant {args.tenant} has no deployments."
    return Result({"tenant": args.tenant,
                   "deployments": [deployment_json(d, args.tenant) for d in deployments]}, text)


# --- API keys ------------------------------------------------------------------------------


def _expiry(args: argparse.Namespace) -> Any:
    """--expires-in / --expires-at / --no-expiry as a time, None (never), or KEEP."""
    if getattr(args, "no_expiry", False):
        return None
    if getattr(args, "expires_in", None) is not None:
        return time.time() + args.expires_in
    if getattr(args, "expires_at", None) is not None:
        return args.expires_at
    return KEEP


def _key_text(info: ApiKeyInfo) -> str:
    scope = "all deployments" if info.deployments is None \
        else "deployments " + ", ".join(info.deployments)
    expires = f"expires {time_text(info.expires_at)}" if info.expires_at is not None \
        else "never expires"
    return (f"{scope}; rpm {_limit_text(info.rpm)}, tpm {_limit_text(info.tpm)} "
            f"(- = no limit); {expires}")


def key_add(store: Store, args: argparse.Namespace) -> Result:
    expires_at = _expiry(args)
    info, secret = store.add_key(args.tenant, args.deployments, args.label,
                                 rpm=getattr(args, "rpm", None), tpm=getattr(args, "tpm", None),
                                 expires_at=None if expires_at is KEEP else expires_at)
    data = {"id": info.id, "key": secret, "tenant": args.tenant, **credential_json(info)}
    return Result(data, f"Created API key {info.id} for tenant {args.tenant} "
                        f"({_key_text(info)}).\n{ONCE_WARNING}\n\n    {secret}\n")


def key_list(store: Store, args: argparse.Namespace) -> Result:
    keys = store.list_keys(args.tenant)
    rows = _credential_rows(keys)
    for row, info in zip(rows, keys, strict=True):
        row[4:4] = [f"{_limit_text(info.rpm)}/{_limit_text(info.tpm)}",
                    time_text(info.expires_at) or "never"]
    headers = (*_CREDENTIAL_HEADERS[:4], "RPM/TPM", "EXPIRES", *_CREDENTIAL_HEADERS[4:])
    text = table(headers, rows) if keys else f"Tenant {args.tenant} has no API keys."
    return Result({"tenant": args.tenant, "keys": [credential_json(k) for k in keys]}, text)


def key_revoke(store: Store, args: argparse.Namespace) -> Result:
    info = store.revoke_key(args.key_id)
    return Result({**credential_json(info), "revoked": True},
                  f"Revoked API key {info.id} (at {time_text(info.revoked_at)}).",
                  revoked=("key", info.id))


def key_set(store: Store, args: argparse.Namespace) -> Result:
    deployments: Any = KEEP
    if getattr(args, "all_deployments", False):
        deployments = None
    elif getattr(args, "deployments", None):
        deployments = args.deployments
    info = store.set_key(args.key_id, deployments=deployments, rpm=_given(args, "rpm"),
                         tpm=_given(args, "tpm"), expires_at=_expiry(args))
    return Result(credential_json(info), f"API key {info.id}: {_key_text(info)}.")


def key_rotate(store: Store, args: argparse.Namespace) -> Result:
    info, secret = store.rotate_key(args.key_id, args.overlap)
    until = time_text(info.previous_valid_until)
    old = f"The old secret works until {until}." if until \
        else "The old secret stopped working now."
    data = {"id": info.id, "key": secret, **credential_json(info)}
    return Result(data, f"Rotated API key {info.id}. {old}\n{ONCE_WARNING}\n\n    {secret}\n")


# --- connector tokens --------------------------------------------------------------------------


def token_add(store: Store, args: argparse.Namespace) -> Result:
    info, secret = store.add_connector_token(args.tenant, args.deployments, args.label)
    data = {"id": info.id, "token": secret, "tenant": args.tenant, **credential_json(info)}
    return Result(data, f"Created connector token {info.id} for tenant {args.tenant} "
                        f"(deployments {', '.join(info.deployments)}).\n"
                        f"{ONCE_WARNING}\n\n    {secret}\n")


def token_list(store: Store, args: argparse.Namespace) -> Result:
    tokens = store.list_connector_tokens(args.tenant)
    text = table(_CREDENTIAL_HEADERS, _credential_rows(tokens)) if tokens \
        else f"Tenant {args.tenant} has no connector tokens."
    return Result({"tenant": args.tenant,
                   "connector_tokens": [credential_json(t) for t in tokens]}, text)


def token_revoke(store: Store, args: argparse.Namespace) -> Result:
    info = store.revoke_connector_token(args.token_id)
    return Result({**credential_json(info), "revoked": True},
                  f"Revoked connector token {info.id} (at {time_text(info.revoked_at)}); "
                  "the gateway closes its live tunnels within about a second.",
                  revoked=("connector_token", info.id))


# --- admin keys --------------------------------------------------------------------------------


def admin_key_json(info: AdminKeyInfo) -> dict[str, Any]:
    return {"id": info.id, "scope": info.scope, "tenant": info.tenant_name,
            "tenant_id": info.tenant_id, "name": info.name, "prefix": info.prefix,
            "created_at": time_text(info.created_at),
            "last_used_at": time_text(info.last_used_at),
            "revoked_at": time_text(info.revoked_at), "active": info.active}


def _scope_text(info: AdminKeyInfo) -> str:
    return "operator" if info.tenant_name is None else f"tenant {info.tenant_name}"


def admin_key_add(store: Store, args: argparse.Namespace) -> Result:
    if args.operator == (args.tenant is not None):
        raise InvalidName("give exactly one of --operator (every tenant) and TENANT (that "
                          "tenant only)")
    info, secret = store.add_admin_key(args.tenant, args.label)
    data = {"id": info.id, "key": secret, **admin_key_json(info)}
    return Result(data, f"Created admin key {info.id} ({_scope_text(info)}) for the admin "
                        f"HTTP API.\n{ONCE_WARNING}\n\n    {secret}\n")


def admin_key_list(store: Store, args: argparse.Namespace) -> Result:
    infos = store.list_admin_keys(args.tenant)
    if args.operator:
        infos = [info for info in infos if info.tenant_id is None]
    now = time.time()
    rows = [[info.id, info.prefix + "_…", _scope_text(info), info.name or "-",
             time_text(info.created_at) or "-", time_text(info.last_used_at) or "never",
             _status_text(info, now)] for info in infos]
    text = table(("ID", "PREFIX", "SCOPE", "NAME", "CREATED", "LAST USED", "STATUS"), rows) \
        if rows else "No admin keys."
    return Result({"admin_keys": [admin_key_json(info) for info in infos]}, text)


def admin_key_revoke(store: Store, args: argparse.Namespace) -> Result:
    info = store.revoke_admin_key(args.admin_key_id)
    return Result({**admin_key_json(info), "revoked": True},
                  f"Revoked admin key {info.id} (at {time_text(info.revoked_at)}); the "
                  "gateway refuses it within about a second.",
                  revoked=("admin_key", info.id))


# --- usage -------------------------------------------------------------------------------------

_GROUP_FIELD = {"key": "key_id", "deployment": "deployment", "day": "day"}
_COUNTS = ("requests", "input_tokens", "output_tokens", "estimated_requests",
           "estimated_input_tokens", "estimated_output_tokens")


def _usage_json(total: UsageTotal, by: str) -> dict[str, Any]:
    counts = {name: getattr(total, name) for name in _COUNTS}
    return {"tenant": total.tenant, _GROUP_FIELD[by]: total.group, **counts,
            "total_tokens": total.input_tokens + total.output_tokens}


def usage(store: Store, args: argparse.Namespace) -> Result:
    by = args.by
    totals = store.usage(args.tenant, key_id=args.key, since=args.since, by=by)
    rows = [_usage_json(t, by) for t in totals]
    overall = {name: sum(row[name] for row in rows) for name in (*_COUNTS, "total_tokens")}
    data = {"tenant": args.tenant, "key": args.key, "since": time_text(args.since), "by": by,
            "usage": rows, "total": overall}
    if not rows:
        return Result(data, "No usage recorded" + (f" since {time_text(args.since)}."
                                                   if args.since is not None else "."))
    headers = ("TENANT", by.upper(), "REQUESTS", "INPUT", "OUTPUT", "TOTAL", "ESTIMATED")

    def cells(row: dict[str, Any]) -> list[str]:
        estimated = f"{row['estimated_requests']} req" if row["estimated_requests"] else "-"
        return [str(row["requests"]), str(row["input_tokens"]), str(row["output_tokens"]),
                str(row["total_tokens"]), estimated]

    lines = [[row["tenant"], row[_GROUP_FIELD[by]], *cells(row)] for row in rows]
    lines.append(["all", "", *cells(overall)])
    return Result(data, table(headers, lines))


def migrate(store: Store, args: argparse.Namespace) -> Result:
    """Opening the store migrated it (or found it current, or refused): report what it did."""
    del args
    assert isinstance(store, SqlStore)
    done = store.migration
    kind = "postgresql" if isinstance(store, PostgresStore) else "sqlite"
    data = {"store": kind, "location": store.location, "from_version": done.from_version,
            "to_version": done.to_version, "migrated": done.migrated}
    text = (f"migrated the schema of {store.location} from version {done.from_version} to "
            f"{done.to_version}" if done.migrated
            else f"the schema of {store.location} is current (version {done.to_version})")
    return Result(data, text)


AdminHandler = Callable[[Store, argparse.Namespace], Result]
#: Commands that may create the store (data directory and database, or a PostgreSQL schema);
#: the others need it to exist. An operator admin key may be the first thing made.
CREATING = frozenset({tenant_add, migrate, admin_key_add})
