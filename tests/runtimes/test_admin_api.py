"""The admin HTTP API through the real gateway over TLS (HTTP/1.1 and HTTP/2): the isolation
matrix (every endpoint x operator, tenant admin of A, tenant admin of B, an API key, no key, a
revoked admin key), what a tenant admin does with it end to end (keys used at once by the
official SDK, rotation, revocation, expiry, connector tokens serving a real connector, usage),
and the errors (JSON with a code, a limit on every input, auth before the body)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from runtimes.store import UsageRow, open_store
from runtimes.store import sql as sql_module
from tests.runtimes.test_gateway_flow import Stack, make_stack, run
from tests.runtimes.test_stream_failures import trusting

OK, CREATED = 200, 201


@dataclass
class World:
    """The objects and credentials the matrix uses (all of tenant acme unless named)."""

    stack: Stack
    keys: dict[str, str | None]
    key_id: str
    revoke_key_id: str
    token_id: str


def world(stack: Stack) -> World:
    with open_store(stack.tmp / "data") as store:
        revoked, revoked_key = store.add_admin_key("acme")
        store.revoke_admin_key(revoked.id)
        keys: dict[str, str | None] = {
            "operator": store.add_admin_key(None, "ops")[1],
            "admin_a": store.add_admin_key("acme")[1],
            "admin_b": store.add_admin_key("globex")[1],
            "api_key": stack.key, "no_key": None, "revoked": revoked_key}
        return World(stack, keys, key_id=store.add_key("acme", name="victim")[0].id,
                     revoke_key_id=store.add_key("acme")[0].id,
                     token_id=store.add_connector_token("acme", ["coder"])[0].id)


def endpoints(w: World, who: str) -> list[tuple[str, str, dict[str, Any] | None, int, int]]:
    """(method, path, body, operator's and tenant admin A's status); tenant admin B gets 404
    for each of acme's objects and 403 for operator-only actions."""
    return [
        ("GET", "whoami", None, OK, OK),
        ("GET", "tenants", None, OK, OK),
        ("POST", "tenants", {"name": f"new-{who}", "rpm": 60}, CREATED, 403),
        ("GET", "tenants/acme", None, OK, OK),
        ("PATCH", "tenants/acme", {"rpm": None}, OK, 403),
        ("GET", "tenants/acme/deployments", None, OK, OK),
        ("POST", "tenants/acme/deployments", {"name": f"dep-{who}", "queue": 4}, CREATED,
         CREATED),
        ("GET", "tenants/acme/deployments/coder", None, OK, OK),
        ("PATCH", "tenants/acme/deployments/coder", {"queue": 8}, OK, OK),
        ("GET", "tenants/acme/keys", None, OK, OK),
        ("POST", "tenants/acme/keys", {"name": who}, CREATED, CREATED),
        ("GET", "tenants/acme/connector-tokens", None, OK, OK),
        ("POST", "tenants/acme/connector-tokens", {"deployments": ["coder"]}, CREATED,
         CREATED),
        ("GET", f"keys/{w.key_id}", None, OK, OK),
        ("PATCH", f"keys/{w.key_id}", {"rpm": None}, OK, OK),
        ("POST", f"keys/{w.key_id}/rotate", {"overlap": "1h"}, OK, OK),
        ("POST", f"keys/{w.revoke_key_id}/revoke", None, OK, OK),
        ("GET", f"connector-tokens/{w.token_id}", None, OK, OK),
        ("POST", f"connector-tokens/{w.token_id}/revoke", None, OK, OK),
        ("GET", "usage", None, OK, OK),
        ("GET", "usage?tenant=acme&by=deployment", None, OK, OK),
        ("GET", "tunnels", None, OK, OK),
        ("GET", "tunnels?tenant=acme", None, OK, OK),
    ]


#: Endpoints that are not about one tenant's object: tenant admin B gets its own view.
_SCOPED_VIEWS = {"whoami", "tenants", "usage", "tunnels"}


def expected(who: str, path: str, operator: int, tenant_a: int) -> int:
    if who in ("api_key", "no_key", "revoked"):
        return 401
    if who == "operator":
        return operator
    if who == "admin_a":
        return tenant_a
    base, _, query = path.partition("?")
    if base in _SCOPED_VIEWS and "tenant=acme" not in query:
        return tenant_a  # its own view (or 403 for creating a tenant)
    return 404


async def call(client: httpx.AsyncClient, key: str | None, method: str, path: str,
               body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    sent = {"authorization": f"Bearer {key}"} if key else {}
    return await client.request(method, f"/admin/v1/{path}", json=body,
                                headers={**sent, **headers})


def snapshot(stack: Stack) -> tuple[object, ...]:
    """Everything of tenant acme that the matrix could change."""
    with open_store(stack.tmp / "data") as store:
        return (store.get_tenant("acme"), store.list_deployments("acme"),
                store.list_keys("acme"), store.list_connector_tokens("acme"),
                [t.name for t in store.list_tenants()])


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_isolation_matrix(tmp_path: Path, http2: bool) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client(http2=http2) as client:
            w = world(stack)
            before = snapshot(stack)
            # first everyone who must change nothing of acme's, then the ones who may
            for who in ("admin_b", "api_key", "no_key", "revoked", "operator", "admin_a"):
                for method, path, body, operator, tenant_a in endpoints(w, who):
                    resp = await call(client, w.keys[who], method, path, body)
                    want = expected(who, path, operator, tenant_a)
                    assert resp.status_code == want, (who, method, path, resp.text)
                    assert resp.headers["content-type"] == "application/json"
                    assert resp.headers["cache-control"] == "no-store"
                    if want >= 400:
                        assert set(resp.json()) == {"error"}
                        assert set(resp.json()["error"]) == {"code", "message"}
                    if who == "admin_b":
                        assert "acme" not in resp.text or resp.status_code == 404, resp.text
                        assert w.key_id not in resp.text or resp.status_code == 404
                if who == "revoked":  # nobody but operator and acme's admin touched acme
                    assert snapshot(stack) == before

    run(main())


def test_another_tenants_objects_look_like_missing_ones(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client() as client:
            w = world(stack)
            op, b = w.keys["operator"], w.keys["admin_b"]
            for path, missing, real in (
                    ("tenants/{}", "nosuch", "acme"),
                    ("tenants/{}/keys", "nosuch", "acme"),
                    ("keys/{}", "key_aaaaaaaaaaaa", w.key_id),
                    ("connector-tokens/{}", "tct_aaaaaaaaaaaa", w.token_id)):
                absent = await call(client, op, "GET", path.format(missing))
                hidden = await call(client, b, "GET", path.format(real))
                assert absent.status_code == hidden.status_code == 404
                assert hidden.json()["error"]["message"].replace(real, "X") == \
                    absent.json()["error"]["message"].replace(missing, "X")
            # and tenant B's own view lists nothing of acme's
            tenants = await call(client, b, "GET", "tenants")
            assert [t["name"] for t in tenants.json()["tenants"]] == ["globex"]
            assert (await call(client, b, "GET", "tunnels")).json() == {
                "tunnels": [], "nodes": [{"node": None, "answered": True, "error": None}]}
            assert (await call(client, b, "GET", "whoami")).json() == {
                "id": (await call(client, b, "GET", "whoami")).json()["id"],
                "scope": "tenant", "tenant": "globex"}
            hidden_patch = await call(client, b, "PATCH", f"keys/{w.key_id}", {"rpm": 1})
            assert hidden_patch.status_code == 404
            with open_store(stack.tmp / "data") as store:
                assert store.get_key(w.key_id).rpm is None

    run(main())


def test_a_tenant_admin_manages_its_keys_and_the_gateway_applies_them_at_once(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client() as client:
            admin = world(stack).keys["admin_a"]

            async def chat(key: str) -> int:
                sdk = openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=key,
                                         http_client=trusting(stack, False), max_retries=0)
                try:
                    await sdk.chat.completions.create(
                        model="coder", max_tokens=5, messages=[{"role": "user", "content": "x"}])
                except openai.APIStatusError as exc:
                    return exc.status_code
                return 200

            made = await call(client, admin, "POST", "tenants/acme/keys", {
                "name": "laptop", "deployments": ["coder"], "rpm": 100,
                "expires_in": "30d"})
            assert made.status_code == 201, made.text
            created = made.json()
            assert {"id", "key", "tenant", "deployments", "prefix", "status", "rpm", "tpm",
                    "expires_at", "previous_secret_valid_until"} <= set(created)
            assert created["deployments"] == ["coder"] and created["rpm"] == 100
            key, key_id = created["key"], created["id"]
            assert await chat(key) == 200
            # each change is applied by this gateway at once (no cache second to wait)
            for change, field, value, status in (
                    ({"deployments": ["unserved"]}, "deployments", ["unserved"], 404),
                    ({"deployments": None}, "deployments", None, 200),
                    ({"expires_at": "2001-01-01"}, "status", "expired", 401),
                    ({"expires_at": None}, "expires_at", None, 200)):
                changed = await call(client, admin, "PATCH", f"keys/{key_id}", change)
                assert changed.json()[field] == value, changed.text
                assert await chat(key) == status, change
            rotated = await call(client, admin, "POST", f"keys/{key_id}/rotate",
                                 {"overlap": 0})
            new_key = rotated.json()["key"]
            assert new_key != key and await chat(key) == 401 and await chat(new_key) == 200
            revoked = await call(client, admin, "POST", f"keys/{key_id}/revoke")
            assert revoked.json()["revoked"] is True
            assert await chat(new_key) == 401
            listed = (await call(client, admin, "GET", "tenants/acme/keys")).json()
            assert key_id in {k["id"] for k in listed["keys"]}
            assert key not in str(listed) and new_key not in str(listed)

    run(main())


def test_usage_through_the_api_is_the_clis_within_the_keys_scope(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack, stack.client() as client:
            w = world(stack)
            now = int(time.time()) // 3600 * 3600
            with open_store(stack.tmp / "data") as store:
                acme, globex = store.get_tenant("acme").id, store.get_tenant("globex").id
                store.record_usage([
                    UsageRow(tenant_id=acme, key_id=w.key_id, deployment="coder", bucket=now,
                             requests=3, input_tokens=30, output_tokens=12),
                    UsageRow(tenant_id=globex, key_id="key_bbbbbbbbbbbb",
                             deployment="secret-model", bucket=now - 7 * 86400, requests=1,
                             input_tokens=5, output_tokens=5)])
            cli = subprocess.run(
                [sys.executable, "-m", "runtimes.gateway.cli", "usage", "--by", "deployment",
                 "--json", "--data", str(stack.tmp / "data")],
                capture_output=True, check=True, timeout=30)
            operator = await call(client, w.keys["operator"], "GET", "usage?by=deployment")
            assert operator.json() == orjson.loads(cli.stdout)  # the same command, the same JSON
            assert {row["tenant"] for row in operator.json()["usage"]} == {"acme", "globex"}
            recent = (await call(client, w.keys["operator"], "GET", "usage?since=1d")).json()
            assert [row["key_id"] for row in recent["usage"]] == [w.key_id]
            mine = (await call(client, w.keys["admin_a"], "GET", "usage")).json()
            assert mine["tenant"] == "acme" and mine["total"]["total_tokens"] == 42
            theirs = (await call(client, w.keys["admin_b"], "GET", f"usage?key={w.key_id}"))
            assert theirs.json()["usage"] == [] and "acme" not in theirs.text

    run(main())


def test_connector_tokens_and_deployments_through_the_api(tmp_path: Path) -> None:
    async def main() -> None:
        async with make_stack(tmp_path) as stack, stack.client(http2=True) as client:
            admin = world(stack).keys["admin_a"]
            made = await call(client, admin, "POST", "tenants/acme/deployments", {
                "name": "org/model", "max_in_flight": 2, "queue": 4, "queue_timeout": "90s"})
            assert made.status_code == 201, made.text
            assert made.json()["queue_timeout"] == 90.0 and made.json()["max_in_flight"] == 2
            for path in ("tenants/acme/deployments/org/model",
                         "tenants/acme/deployments/org%2Fmodel"):
                assert (await call(client, admin, "GET", path)).json() == made.json()
            again = await call(client, admin, "POST", "tenants/acme/deployments",
                               {"name": "org/model"})
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "already_exists"

            token = await call(client, admin, "POST", "tenants/acme/connector-tokens",
                               {"deployments": ["coder"], "name": "second"})
            assert token.status_code == 201 and token.json()["token"].startswith("tkct-")
            stack.start_connector(token.json()["token"])
            await stack.wait_served(2)
            tunnels = (await call(client, admin, "GET", "tunnels")).json()["tunnels"]
            assert len(tunnels) == 2
            assert {t["connector_token_id"] for t in tunnels} == {stack.token_id,
                                                                 token.json()["id"]}
            for tunnel in tunnels:
                assert tunnel["tenant"] == "acme" and tunnel["protocol_version"] == 2
                assert tunnel["deployments"][0]["name"] == "coder"
                assert tunnel["software_version"] and tunnel["connector_id"]
                assert tunnel["connected_since"].endswith("Z")
            revoked = await call(client, admin, "POST",
                                 f"connector-tokens/{token.json()['id']}/revoke")
            assert revoked.json()["revoked"] is True
            deadline = time.monotonic() + 5
            while len((await call(client, admin, "GET", "tunnels")).json()["tunnels"]) > 1:
                assert time.monotonic() < deadline, "the revoked token's tunnel stayed"
                await asyncio.sleep(0.05)

    run(main())


def test_errors_are_json_with_a_code_and_every_input_is_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with make_stack(tmp_path, connect=False) as stack, stack.client() as client:
            op = world(stack).keys["operator"]

            async def error(resp: httpx.Response, status: int, code: str) -> str:
                assert resp.status_code == status, resp.text
                assert resp.json()["error"]["code"] == code
                return str(resp.json()["error"]["message"])

            await error(await call(client, None, "GET", "nothing-here"), 404, "not_found")
            await error(await call(client, op, "GET", "nothing-here"), 404, "not_found")
            wrong = await call(client, op, "DELETE", "tenants/acme")
            await error(wrong, 405, "method_not_allowed")
            assert wrong.headers["allow"] == "GET, PATCH"
            assert "unknown field `color`" in await error(
                await call(client, op, "POST", "tenants", {"name": "x", "color": 1}),
                400, "invalid")
            assert "`rpm`" in await error(
                await call(client, op, "PATCH", "tenants/acme", {"rpm": "lots"}), 400,
                "invalid")
            assert "rpm" in await error(
                await call(client, op, "PATCH", "tenants/acme", {"rpm": 0}), 400, "invalid")
            await error(await client.post("/admin/v1/tenants", content=b"{not json",
                                          headers={"authorization": f"Bearer {op}"}),
                        400, "invalid")
            await error(await client.post("/admin/v1/tenants", content=b"[1]",
                                          headers={"authorization": f"Bearer {op}"}),
                        400, "invalid")
            await error(await call(client, op, "POST", "tenants/acme/keys",
                                   {"expires_at": "soon"}), 400, "invalid")
            await error(await call(client, op, "POST", "tenants/acme/keys",
                                   {"expires_at": None, "expires_in": "1d"}), 400, "invalid")
            await error(await call(client, op, "POST", "tenants/acme/keys",
                                   {"deployments": ["x"] * 1001}), 400, "invalid")
            await error(await call(client, op, "POST", "tenants/acme/keys",
                                   {"deployments": ["nope"]}), 404, "not_found")
            await error(await call(client, op, "PATCH", "keys/key_aaaaaaaaaaaa",
                                   {"deployments": []}), 400, "invalid")
            await error(await call(client, op, "POST", "tenants/acme/connector-tokens",
                                   {"name": "no deployments"}), 400, "invalid")
            await error(await call(client, op, "POST", "tenants", {}), 400, "invalid")
            monkeypatch.setattr(sql_module, "MAX_ACTIVE_CREDENTIALS_PER_TENANT", 1)
            await error(await call(client, op, "POST", "tenants/globex/keys", {}), 422,
                        "limit_exceeded")  # globex has one key already
            await error(await call(client, op, "GET", "usage?by=minute"), 400, "invalid")
            await error(await call(client, op, "GET", "usage?colour=red"), 400, "invalid")
            await error(await call(client, op, "GET", "usage?" + "&".join(
                f"a{i}=1" for i in range(11))), 400, "invalid")
            await error(await call(client, op, "GET", "tenants/" + "a" * 1100), 414,
                        "too_large")
            big = await client.post("/admin/v1/tenants", content=b" " * (300 * 1024),
                                    headers={"authorization": f"Bearer {op}"})
            await error(big, 413, "too_large")
            await error(await call(client, op, "GET", "tenants/bad name!"), 400, "invalid")
            # the key is checked before the body is read: a huge body without one is a 401
            unauthenticated = await client.post("/admin/v1/tenants",
                                                content=b"x" * (1024 * 1024))
            assert "admin key" in await error(unauthenticated, 401, "unauthenticated")
            assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
            api_key = await call(client, stack.key, "GET", "whoami")
            assert "not admin keys" in await error(api_key, 401, "unauthenticated")
            assert stack.key not in api_key.text

    run(main())
