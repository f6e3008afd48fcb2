"""Token usage in the SQL stores: adding hourly counts and summing them.

Called by :class:`runtimes.store.sql.SqlStore` inside its transactions (SQLite and PostgreSQL
run the same statements): :func:`add` for ``record_usage`` (one upsert per row, counts add up
in the database, so writers on several nodes never lose each other's counts), :func:`totals`
for ``usage``. The table holds counts per (tenant, key, deployment, hour) and nothing else: no
prompt, no completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from runtimes.store.base import (
    USAGE_BUCKET_SECONDS,
    InvalidName,
    UsageGrouping,
    UsageRow,
    UsageTotal,
)

if TYPE_CHECKING:
    from runtimes.store.sql import Sql

_COUNTS = ("requests", "input_tokens", "output_tokens", "estimated_requests",
           "estimated_input_tokens", "estimated_output_tokens")
#: The SQL expression each grouping sums by (the day is the bucket's UTC day number).
_GROUPS: dict[str, str] = {
    "key": "u.key_id",
    "deployment": "u.deployment",
    "day": f"u.bucket / {86400 // USAGE_BUCKET_SECONDS * USAGE_BUCKET_SECONDS}",
}


def add(db: Sql, rows: Sequence[UsageRow]) -> None:
    """Upsert ``rows``: a row for a (tenant, key, deployment, hour) already stored adds up."""
    updates = ", ".join(f"{name} = usage.{name} + excluded.{name}" for name in _COUNTS)
    # in primary-key order, so that two writers' row locks never cross (PostgreSQL)
    rows = sorted(rows, key=lambda r: (r.tenant_id, r.key_id, r.deployment, int(r.bucket)))
    db.executemany(
        f"INSERT INTO usage (tenant_id, key_id, deployment, bucket, {', '.join(_COUNTS)}) "  # noqa: S608
        f"VALUES (?, ?, ?, ?, {', '.join('?' for _ in _COUNTS)}) "
        f"ON CONFLICT (tenant_id, key_id, deployment, bucket) DO UPDATE SET {updates}",
        [(r.tenant_id, r.key_id, r.deployment, int(r.bucket), r.requests, r.input_tokens,
          r.output_tokens, r.estimated_requests, r.estimated_input_tokens,
          r.estimated_output_tokens) for r in rows])


def totals(db: Sql, *, tenant_id: str | None, key_id: str | None,
           since: float | None, by: UsageGrouping) -> list[UsageTotal]:
    """Sums per tenant and group, from the hour holding ``since`` on; sorted by tenant, then
    by group (days in order, keys and deployments by name)."""
    group = _GROUPS.get(by)
    if group is None:
        raise InvalidName(f"usage can be grouped by {', '.join(_GROUPS)}, not {by!r}")
    where: list[str] = ["1 = 1"]
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
    # int(): PostgreSQL sums bigints as numeric
    return [UsageTotal(tenant=tenant, group=_group_name(by, value), requests=int(n),
                       input_tokens=int(i), output_tokens=int(o), estimated_requests=int(en),
                       estimated_input_tokens=int(ei), estimated_output_tokens=int(eo))
            for tenant, value, n, i, o, en, ei, eo in rows]


def _group_name(by: str, value: object) -> str:
    if by == "day":
        assert isinstance(value, int)
        return datetime.fromtimestamp(value * 86400, UTC).strftime("%Y-%m-%d")
    return str(value)
