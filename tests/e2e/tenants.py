"""Tenants made the way an admin makes them: over `/v1`, keys from the 201."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.conftest import Stack
from tests.support import wait_until


@dataclass(frozen=True)
class Tenant:
    account_id: str
    user_id: str
    name: str
    domain_id: str
    api_key: str
    secret_key: str

    def http(self, stack: Stack) -> httpx.AsyncClient:
        return stack.http(self.api_key)


async def new_domain(admin: httpx.AsyncClient, parent_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"d-{uuid.uuid4().hex[:8]}"}
    if parent_id:
        body["parent_id"] = parent_id
    response = await admin.post("/v1/domains", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def new_tenant(
    admin: httpx.AsyncClient, *, account_type: str = "User", domain_id: str | None = None
) -> Tenant:
    body: dict[str, Any] = {"name": f"t-{uuid.uuid4().hex[:8]}", "account_type": account_type}
    if domain_id:
        body["domain_id"] = domain_id
    response = await admin.post("/v1/accounts", json=body)
    assert response.status_code == 201, response.text
    made = response.json()
    return Tenant(
        account_id=made["account"]["id"],
        user_id=made["user"]["id"],
        name=made["account"]["name"],
        domain_id=made["account"]["domain_id"],
        api_key=made["keys"]["api_key"],
        secret_key=made["keys"]["secret_key"],
    )


async def key_works(stack: Stack, key: str) -> None:
    """Wait until a key made in the event store directly (not over the API, which waits for
    it) is in the read model the API authenticates from."""

    async def probe() -> int:
        async with stack.http(key) as http:
            return (await http.get("/v1/zones")).status_code

    await wait_until(probe, lambda status: status == 200, timeout=30, what="the new key to work")
