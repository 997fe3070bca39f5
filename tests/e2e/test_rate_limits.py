"""Rate limits over HTTP: a key past its burst is answered 429 with `Retry-After`, in `/v1`'s
error shape and in CloudStack's envelope on `/client/api`, while other keys go on; once
Retry-After has passed it is admitted again.

The module runs a stack of its own whose limit is low (RATE a second, BURST at once); the
package's `stack`, unlimited, is where the admin makes the tenants (both share the database,
so the tenants' keys work on either). Each test takes fresh tenants: fresh buckets.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.cloudstack.signing import signature_of
from api.settings import ApiSettings
from domain.cloud import Cloud
from projections.runner import Projector
from tests.e2e.conftest import Stack, serving_stack
from tests.e2e.tenants import Tenant, new_tenant
from tests.support import wait_until

RATE = 2.0
BURST = 3
PATH = "/client/api"
Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@pytest.fixture(scope="module")
async def limited(
    temporal_client: Client, cloud: Cloud, projector: Projector, database_url: str
) -> AsyncIterator[Stack]:
    settings = ApiSettings(api_rate_limit_per_second=RATE, api_rate_limit_burst=BURST)
    async with serving_stack(temporal_client, cloud, database_url, settings=settings) as served:
        yield served


async def tenants(stack: Stack, count: int) -> list[Tenant]:
    async with stack.http() as admin:
        return [await new_tenant(admin) for _ in range(count)]


def signed(tenant: Tenant, method: str = "GET") -> Send:
    """A signed listVirtualMachines of the tenant's, as a GET query or a POST form body."""
    params = {"command": "listVirtualMachines", "response": "json", "apiKey": tenant.api_key}
    params["signature"] = signature_of(params, tenant.secret_key)

    async def send(http: httpx.AsyncClient) -> httpx.Response:
        if method == "GET":
            return await http.get(PATH, params=params)
        return await http.post(PATH, data=params)

    return send


def v1(tenant: Tenant) -> Send:
    async def send(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get("/v1/virtual-machines", headers={"X-API-Key": tenant.api_key})

    return send


def retry_after(response: httpx.Response) -> int:
    """The 429's Retry-After: whole seconds, at least 1."""
    assert response.status_code == 429, response.text
    text = response.headers["Retry-After"]
    assert text.isdigit(), text
    seconds = int(text)
    assert 1 <= seconds <= 60, seconds
    return seconds


def v1_refusal(response: httpx.Response) -> None:
    """`/v1`'s error shape: `{"detail": [{loc, msg, type}], "errorcode": 429}`."""
    body = response.json()
    assert set(body) == {"detail", "errorcode"} and body["errorcode"] == 429, body
    (detail,) = body["detail"]
    assert set(detail) == {"loc", "msg", "type"} and "retry after" in detail["msg"], detail


def cloudstack_refusal(response: httpx.Response) -> None:
    """CloudStack's envelope: `{"listvirtualmachinesresponse": {"errorcode": 429, ...}}`."""
    body = response.json()
    assert list(body) == ["listvirtualmachinesresponse"], body
    inner = body["listvirtualmachinesresponse"]
    assert inner["errorcode"] == 429 and "retry after" in inner["errortext"], inner


async def exhaust(http: httpx.AsyncClient, send: Send) -> tuple[httpx.Response, float]:
    """Spend a fresh key's burst (each request admitted), then ask until refused: the 429 and
    when it arrived (`time.monotonic()`)."""
    for _ in range(BURST):
        admitted = await send(http)
        assert admitted.status_code == 200, admitted.text
    # Tokens come back at RATE a second; requests go faster, so a refusal comes within a few.
    refused: httpx.Response = await wait_until(
        lambda: send(http),
        lambda response: response.status_code != 200,
        timeout=10,
        interval=0,
        what="a request past the burst to be refused",
    )
    return refused, time.monotonic()


async def admitted_again(
    http: httpx.AsyncClient, send: Send, refused_at: float, seconds: int
) -> None:
    """The key is admitted again once Retry-After has passed (refused until then)."""
    seen: list[int] = []

    async def ask() -> httpx.Response:
        response = await send(http)
        seen.append(response.status_code)
        return response

    await wait_until(
        ask,
        lambda response: response.status_code == 200,
        timeout=seconds + 10,
        interval=0.1,
        what=f"the limited key to be admitted again after Retry-After: {seconds} s",
    )
    assert set(seen[:-1]) <= {429}, seen
    # Retry-After rounds up the wait for the next token, so the key is admitted by then.
    assert time.monotonic() - refused_at <= seconds + 3


async def test_v1_answers_429_with_retry_after_past_the_burst_and_admits_the_key_again(
    stack: Stack, limited: Stack
) -> None:
    mine, other = await tenants(stack, 2)
    async with limited.http(None) as http:
        refused, refused_at = await exhaust(http, v1(mine))
        seconds = retry_after(refused)
        v1_refusal(refused)
        assert (await v1(other)(http)).status_code == 200
        await admitted_again(http, v1(mine), refused_at, seconds)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_client_api_answers_429_with_retry_after_past_the_burst_and_admits_the_key_again(
    stack: Stack, limited: Stack, method: str
) -> None:
    mine, other = await tenants(stack, 2)
    async with limited.http(None) as http:
        refused, refused_at = await exhaust(http, signed(mine, method))
        seconds = retry_after(refused)
        cloudstack_refusal(refused)
        assert (await signed(other, method)(http)).status_code == 200
        await admitted_again(http, signed(mine, method), refused_at, seconds)


async def test_a_key_limited_on_v1_is_limited_on_client_api_too(
    stack: Stack, limited: Stack
) -> None:
    (mine,) = await tenants(stack, 1)
    async with limited.http(None) as http:
        await exhaust(http, v1(mine))
        refused = await signed(mine)(http)
        retry_after(refused)
        cloudstack_refusal(refused)


async def test_badly_signed_requests_naming_a_key_do_not_spend_its_tokens(
    stack: Stack, limited: Stack
) -> None:
    """Someone who knows an apiKey, but not its secret, cannot lock its owner out."""
    (victim,) = await tenants(stack, 1)
    forged: dict[str, Any] = {
        "command": "listVirtualMachines",
        "response": "json",
        "apiKey": victim.api_key,
    }
    forged["signature"] = signature_of(forged, "not-the-secret")
    async with limited.http(None) as http:
        for _ in range(3 * BURST):
            response = await http.get(PATH, params=forged)
            assert response.status_code == 401, response.text
        for _ in range(BURST):
            response = await signed(victim)(http)
            assert response.status_code == 200, response.text
