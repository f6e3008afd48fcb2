"""``tokios-gateway tunnels``: the live tunnel list of running gateways, read from their admin
HTTP API (``GET /admin/v1/tunnels``) with an admin key.

    result = tunnels(args)     # args: urls, admin_key, ca_file, tenant, timeout; -> admin.Result

A gateway of several nodes (or worker processes) answers for all of them: the node reached asks
its peers (``GET /v1/node/tunnels`` between nodes) and tags each tunnel with its ``node``; a node
that did not answer is listed in ``nodes`` and named in a warning on stderr. ``--url`` may repeat
for separate gateways; each entry keeps the ``gateway`` it came from (a tunnel listed twice, by
two URLs of one gateway, is shown once). Any gateway that cannot be asked at all fails the whole
command (:class:`AdminApiError`), naming it. The key goes only over TLS, or plain HTTP to
loopback.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import ssl
import sys
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from runtimes.gateway.admin import Result, table

__all__ = ["AdminApiError", "tunnels"]

#: The most bytes read from one gateway's answer.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 10.0


class AdminApiError(Exception):
    """A gateway could not be asked or refused: ``code`` is its error code (``unreachable``,
    ``unauthenticated``, ...), the message names the gateway."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def get_json(url: str, path: str, *, admin_key: str, context: ssl.SSLContext,
             timeout: float) -> dict[str, Any]:
    """``GET url + path`` with the admin key; the JSON object answered, or AdminApiError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host or parts.query or parts.fragment:
        raise AdminApiError("usage", f"{url!r} is not a gateway URL: give https://HOST[:PORT]")
    if parts.scheme == "http" and not _loopback(host):
        raise AdminApiError("usage", f"{url}: the admin key goes over TLS only (https://), "
                                     "or plain HTTP to a loopback address")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, parts.port, timeout=timeout,
                                                 context=context)
    else:
        connection = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path.rstrip("/") + path,
                           headers={"authorization": f"Bearer {admin_key}",
                                    "accept": "application/json"})
        response = connection.getresponse()
        raw = response.read(MAX_ANSWER_BYTES + 1)
    except ssl.SSLError as exc:
        raise AdminApiError("tls", f"{url}: TLS failed ({exc.reason or exc}); give --ca-file "
                                   "for a private CA") from None
    except (OSError, http.client.HTTPException) as exc:
        raise AdminApiError("unreachable", f"{url}: cannot reach the gateway "
                                           f"({getattr(exc, 'strerror', None) or exc})") from None
    finally:
        connection.close()
    try:
        answer = orjson.loads(raw) if len(raw) <= MAX_ANSWER_BYTES else None
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise AdminApiError("bad_answer", f"{url}: HTTP {response.status} without a JSON "
                                          "object: is this a Tokios gateway?")
    error = answer.get("error")
    if response.status != 200 or error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        raise AdminApiError(str(code or "http_error"),
                            f"{url}: HTTP {response.status}: {message or 'refused'}")
    return answer


def _context(ca_file: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise AdminApiError("usage", f"--ca-file {ca_file}: {exc}") from None


def tunnels(args: argparse.Namespace) -> Result:
    """Ask every gateway in ``args.urls`` for its live tunnels; one list, text and JSON."""
    context = _context(args.ca_file)
    path = "/admin/v1/tunnels" + (f"?tenant={quote(args.tenant, safe='')}"
                                  if args.tenant else "")
    listed: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    seen: set[object] = set()
    for url in args.urls:
        answer = get_json(url, path, admin_key=args.admin_key, context=context,
                          timeout=args.timeout)
        entries = answer.get("tunnels")
        if not isinstance(entries, list):
            raise AdminApiError("bad_answer", f"{url}: the answer has no tunnel list")
        for entry in entries:
            if isinstance(entry, dict) and entry.get("session") not in seen:
                seen.add(entry.get("session"))
                listed.append({"gateway": url, **entry})
        for node in answer.get("nodes") or ():
            if isinstance(node, dict):
                nodes.append({"gateway": url, **node})
                if not node.get("answered"):
                    sys.stderr.write(f"tokios-gateway: warning: {url}: node "
                                     f"{_shown(node.get('node'))} did not answer "
                                     f"({_shown(node.get('error'))}): its tunnels are missing\n")
    data = {"tunnels": listed, "nodes": nodes}
    if not listed:
        return Result(data, "No live tunnels.")
    several = len(args.urls) > 1
    by_node = len({entry.get("node") for entry in listed}) > 1
    rows = []
    for entry in listed:
        deployments = ", ".join(
            str(d.get("name")) + ("" if d.get("healthy") else " (unhealthy)")
            for d in entry.get("deployments") or () if isinstance(d, dict))
        rtt = entry.get("rtt_seconds")
        cells = [_shown(entry.get("session")), _shown(entry.get("tenant")),
                 _shown(entry.get("connector_id")), _shown(entry.get("software_version")),
                 _shown(deployments),
                 "-" if not isinstance(rtt, int | float) else f"{rtt * 1000:.0f}ms",
                 f"{entry.get('streams_in_flight')}/{entry.get('max_streams')}",
                 _shown(entry.get("connected_since"))
                 + (" draining" if entry.get("draining") else "")]
        where = ([str(entry["gateway"])] if several else []) + \
            ([_shown(entry.get("node"))] if by_node else [])
        rows.append([*where, *cells])
    headers = ("SESSION", "TENANT", "CONNECTOR", "VERSION", "DEPLOYMENTS", "RTT", "STREAMS",
               "CONNECTED SINCE")
    shown = (("GATEWAY",) if several else ()) + (("NODE",) if by_node else ()) + headers
    return Result(data, table(shown, rows))


def _shown(value: object) -> str:
    """A value for the table: what a connector sent about itself is printed without control
    characters and cut at 60 characters."""
    text = "-" if value is None or value == "" else str(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 60 else text[:59] + "…"
