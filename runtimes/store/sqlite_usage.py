"""Token usage in the SQLite store: adding hourly counts and summing them.

Called by :class:`runtimes.store.sqlite.SqliteStore` inside its transactions: :func:`add` for
``record_usage`` (one upsert per row, counts add up), :func:`totals` for ``usage``. The table
holds counts per (tenant, key, deployment, hour) and nothing else: no prompt, no completion.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from runtimes.store.base import (
    USAGE_BUCKET_SECONDS,
    InvalidName,
    UsageGrouping,
    UsageRow,
    UsageTotal,
)

_COUNTS = ("requests", "input_tokens", "output_tokens", "estimated_requests",
           "estimated_input_tokens", "estimated_output_tokens")
#: The SQL expression each grouping sums by (the day is the bucket's UTC day number).
_GROUPS: dict[str, str] = {
    "key": "u.key_id",
    "deployment": "u.deployment",
    "day": f"u.bucket / {86400 // USAGE_BUCKET_SECONDS * USAGE_BUCKET_SECONDS}",
}


def add(db: sqlite3.Connection, rows: Sequence[UsageRow]) -> None:
    """Upsert ``rows``: a row for a (tenant, key, deployment, hour) already stored adds up."""
    updates = ", ".join(f"{name} = {name} + excluded.{name}" for name in _COUNTS)
    db.executemany(
        f"INSERT INTO usage (tenant_id, key_id, deployment, bucket, {', '.join(_COUNTS)}) "  # noqa: S608
        f"VALUES (?, ?, ?, ?, {', '.join('?' for _ in _COUNTS)}) "
        f"ON CONFLICT (tenant_id, key_id, deployment, bucket) DO UPDATE SET {updates}",
        [(r.tenant_id, r.key_id, r.deployment, int(r.bucket), r.requests, r.input_tokens,
          r.output_tokens, r.estimated_requests, r.estimated_input_tokens,
          r.estimated_output_tokens) for r in rows])


def totals(db: sqlite3.Connection, *, tenant_id: str | None, key_id: str | None,
           since: float | None, by: UsageGrouping) -> list[UsageTotal]:
    """Sums per tenant and group, from the hour holding ``since`` on; sorted by tenant, then
    by group (days in order, keys and deployments by name)."""
    group = _GROUPS.get(by)
    if group is None:
        raise InvalidName(f"usage can be grouped by {', '.join(_GROUPS)}, not {by!r}")
    where: list[str] = ["1"]
    args: list[object] = []
    if tenant_id is not None:
        where.append("u.tenant_id = ?")
        args.append(tenant_id)
    if key_id is not None:
        where.append("u.key_id = ?")
        args.append(key_id)
    if since is not None:
        where.append("u.bucket >= ?")
        args.append(int(since) // USAGE_BUCKET_SECONDS * USAGE_BUCKET_SECONDS)
    sums = ", ".join(f"sum(u.{name})" for name in _COUNTS)
    rows = db.execute(
        f"SELECT t.name, {group} AS g, {sums} FROM usage u "  # noqa: S608
        f"JOIN tenants t ON t.id = u.tenant_id WHERE {' AND '.join(where)} "
        "GROUP BY t.name, g ORDER BY t.name, g", args)
    return [UsageTotal(tenant=tenant, group=_group_name(by, value), requests=n,
                       input_tokens=i, output_tokens=o, estimated_requests=en,
                       estimated_input_tokens=ei, estimated_output_tokens=eo)
            for tenant, value, n, i, o, en, ei, eo in rows]


def _group_name(by: str, value: object) -> str:
    if by == "day":
        assert isinstance(value, int)
        return datetime.fromtimestamp(value * 86400, UTC).strftime("%Y-%m-%d")
    return str(value)
