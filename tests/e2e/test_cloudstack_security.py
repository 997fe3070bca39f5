"""`/client/api` refuses what its signature does not prove, and shows no tenant another's.

Requests are signed here by hand with `signature_of`, the function the endpoint's own check is
built on (the `cs` client's signing is covered by tests/unit/test_cloudstack_signing.py and
tests/e2e/test_cloudstack_client.py), and sent with httpx as a GET query string or a POST form
body, so that a test can take a correctly signed request and spoil exactly one thing about it.
Each refusal is checked in CloudStack's envelope (HTTP status = errorcode, one top-level
`<command>response` key) and, for a request that would have changed something, against what
`/v1` shows the root admin afterwards: the command did not run.

Two tenants, each with one VM deployed once for the whole module (deploys are the slow part):
A in a subdomain of a domain administered by `boss`, B in ROOT.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx
import pytest

from api.cloudstack.signing import signature_of
from tests.e2e.conftest import Stack, deploy_order, wait_for_job
from tests.e2e.tenants import Tenant, new_domain, new_tenant
from tests.support import wait_until

PATH = "/client/api"
Method = Literal["GET", "POST"]
METHODS: list[Method] = ["GET", "POST"]
Pairs = Sequence[tuple[str, str]]
VMS = ("listVirtualMachines", "virtualmachine")


# -- signing and sending -----------------------------------------------------------------------
def signed(
    tenant: Tenant, params: Mapping[str, str], *, secret: str | None = None
) -> dict[str, str]:
    """`params` with `response=json` and the tenant's apiKey, signed with its secret (or
    `secret`)."""
    given = {"response": "json", **params, "apiKey": tenant.api_key}
    given["signature"] = signature_of(given, secret or tenant.secret_key)
    return given


def expiring(params: Mapping[str, str], expires: datetime | str) -> dict[str, str]:
    """`params` with signatureVersion=3 and `expires` (a moment, or text as given)."""
    text = expires if isinstance(expires, str) else expires.strftime("%Y-%m-%dT%H:%M:%S+0000")
    return {**params, "signatureVersion": "3", "expires": text}


def encoded(pairs: Pairs) -> str:
    """As CloudStack clients encode parameters: percent-encoded UTF-8, spaces as %20."""
    return urlencode(list(pairs), quote_via=quote, safe="*")


async def send(
    http: httpx.AsyncClient,
    params: Mapping[str, str] | Pairs,
    method: Method = "GET",
    *,
    query: Pairs = (),
) -> httpx.Response:
    """GET with the parameters in the query string, or POST with them as a form body (and
    `query` in the query string)."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    if method == "GET":
        return await http.get(f"{PATH}?{encoded([*query, *pairs])}")
    url = f"{PATH}?{encoded(query)}" if query else PATH
    return await http.post(
        url,
        content=encoded(pairs),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def refusal(response: httpx.Response, status: int, command: str | None) -> dict[str, Any]:
    """The refusal's inner object, once the answer is CloudStack's: HTTP status = errorcode,
    and one top-level key, `<command>response` (`errorresponse` for no known command)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    name = f"{command.lower()}response" if command else "errorresponse"
    assert list(body) == [name], body
    inner: dict[str, Any] = body[name]
    assert inner["errorcode"] == status, inner
    assert isinstance(inner["errortext"], str) and inner["errortext"], inner
    assert isinstance(inner["cserrorcode"], int) and inner["uuidList"] == [], inner
    return inner


def listed(response: httpx.Response, command: str, entity: str) -> list[dict[str, Any]]:
    """The items of a list answer (an empty page is `{"<cmd>response": {}}`)."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == [f"{command.lower()}response"], body
    items: list[dict[str, Any]] = body[f"{command.lower()}response"].get(entity, [])
    return items


# -- the module's tenants and VMs ------------------------------------------------------------
@dataclass(frozen=True)
class World:
    boss: Tenant
    a: Tenant
    b: Tenant
    a_vm: dict[str, Any]
    a_volume_id: str
    a_job_id: str
    b_vm: dict[str, Any]
    b_job_id: str

    def secrets_of_a(self) -> list[str]:
        """What tenant B must never be shown: A's VM (id, name), its volume and its job."""
        return [self.a_vm["id"], self.a_vm["name"], self.a_volume_id, self.a_job_id]


async def deployed(stack: Stack, tenant: Tenant, name: str) -> tuple[dict[str, Any], str]:
    async with tenant.http(stack) as http:
        accepted = await http.post("/v1/virtual-machines", json=deploy_order(stack, name=name))
        assert accepted.status_code == 202, accepted.text
        job = await wait_for_job(http, accepted.json()["job_id"])
        assert job["jobstatus"] == 1, job
        vm = await http.get(f"/v1/virtual-machines/{accepted.json()['virtual_machine_id']}")
        assert vm.status_code == 200 and vm.json()["state"] == "Running", vm.text
        return vm.json(), accepted.json()["job_id"]


@pytest.fixture(scope="module")
async def world(stack: Stack) -> World:
    async with stack.http() as admin:
        parent = await new_domain(admin)
        child = await new_domain(admin, parent["id"])
        boss = await new_tenant(admin, account_type="DomainAdmin", domain_id=parent["id"])
        a = await new_tenant(admin, domain_id=child["id"])
        b = await new_tenant(admin)
        tag = uuid.uuid4().hex[:6]
        (a_vm, a_job), (b_vm, b_job) = await asyncio.gather(
            deployed(stack, a, f"sec-a-{tag}"), deployed(stack, b, f"sec-b-{tag}")
        )
        volumes = await admin.get("/v1/volumes", params={"vm_id": a_vm["id"], "consistent": "true"})
        assert volumes.status_code == 200, volumes.text
        (a_volume,) = volumes.json()["data"]
    return World(boss, a, b, a_vm, a_volume["id"], a_job, b_vm, b_job)


async def assert_untouched(stack: Stack, tenant: Tenant, vm_id: str, job_id: str) -> None:
    """The tenant still has its one VM, Running, and no job but its deploy, as the root admin
    reads them over `/v1` (consistent reads: every write made so far included)."""
    async with stack.http() as admin:
        vms = await admin.get(
            "/v1/virtual-machines", params={"account_id": tenant.account_id, "consistent": "true"}
        )
        assert vms.status_code == 200, vms.text
        assert [(v["id"], v["state"]) for v in vms.json()["data"]] == [(vm_id, "Running")]
        jobs = await admin.get(
            "/v1/jobs", params={"account_id": tenant.account_id, "consistent": "true"}
        )
        assert jobs.status_code == 200, jobs.text
        assert [j["id"] for j in jobs.json()["data"]] == [job_id]


async def assert_a_untouched(stack: Stack, world: World) -> None:
    """Nothing ran in A's name."""
    await assert_untouched(stack, world.a, world.a_vm["id"], world.a_job_id)


def attempt(stack: Stack, world: World, kind: str, tag: str = "x") -> dict[str, str]:
    """A request that would change A's cloud if it ran: stop its VM, or deploy one more."""
    if kind == "stop":
        return {"command": "stopVirtualMachine", "id": world.a_vm["id"]}
    return {
        "command": "deployVirtualMachine",
        "zoneid": str(stack.zone.zone_id),
        "serviceofferingid": str(stack.zone.small_offering_id),
        "templateid": str(stack.zone.template_id),
        "name": f"never-{tag}",
    }


ATTEMPTS = ["stop", "deploy"]


# -- a correctly signed request is answered (what every refusal below spoils) ----------------
@pytest.mark.parametrize("method", METHODS)
async def test_a_correctly_signed_request_is_answered_with_the_tenants_own_vm(
    stack: Stack, world: World, method: Method
) -> None:
    now = datetime.now(UTC)
    async with stack.http(None) as http:
        for params in (
            signed(world.a, {"command": "listVirtualMachines"}),
            signed(
                world.a, expiring({"command": "listVirtualMachines"}, now + timedelta(minutes=5))
            ),
        ):
            vms = listed(await send(http, params, method), "listVirtualMachines", "virtualmachine")
            assert [(v["id"], v["name"], v["state"]) for v in vms] == [
                (world.a_vm["id"], world.a_vm["name"], "Running")
            ]


# -- requests the signature does not prove: 401, and nothing ran -----------------------------
def unknown_key(stack: Stack, world: World, kind: str) -> Pairs:
    stranger = Tenant(**{**vars(world.a), "api_key": f"unknown-{uuid.uuid4().hex}"})
    return list(signed(stranger, attempt(stack, world, kind)).items())


def wrong_secret(stack: Stack, world: World, kind: str) -> Pairs:
    return list(signed(world.a, attempt(stack, world, kind), secret=world.b.secret_key).items())


def tampered(stack: Stack, world: World, kind: str) -> Pairs:
    """Signed by A, then changed in transit: the id of a VM that does not exist becomes A's
    VM's; a deploy's name becomes another."""
    if kind == "stop":
        params = signed(world.a, {"command": "stopVirtualMachine", "id": str(uuid.uuid4())})
        params["id"] = world.a_vm["id"]
    else:
        params = signed(world.a, attempt(stack, world, kind, "signed"))
        params["name"] = "never-tampered"
    return list(params.items())


def added_parameter(stack: Stack, world: World, kind: str) -> Pairs:
    """A parameter added after signing (here one the command reads)."""
    params = signed(world.a, attempt(stack, world, kind))
    return [*params.items(), ("forced" if kind == "stop" else "displayname", "true")]


def unsigned(stack: Stack, world: World, kind: str) -> Pairs:
    params = signed(world.a, attempt(stack, world, kind))
    del params["signature"]
    return list(params.items())


def expired(stack: Stack, world: World, kind: str) -> Pairs:
    past = datetime.now(UTC) - timedelta(minutes=2)
    return list(signed(world.a, expiring(attempt(stack, world, kind), past)).items())


def malformed_expires(stack: Stack, world: World, kind: str) -> Pairs:
    return list(signed(world.a, expiring(attempt(stack, world, kind), "tomorrow")).items())


def far_expires(stack: Stack, world: World, kind: str) -> Pairs:
    """A far-off `expires` would make a leaked URL replayable for that long."""
    later = datetime.now(UTC) + timedelta(days=30)
    return list(signed(world.a, expiring(attempt(stack, world, kind), later)).items())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ATTEMPTS)
@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(unknown_key, id="an_unknown_api_key"),
        pytest.param(wrong_secret, id="a_wrong_secret"),
        pytest.param(tampered, id="a_parameter_changed_after_signing"),
        pytest.param(added_parameter, id="a_parameter_added_after_signing"),
        pytest.param(unsigned, id="no_signature"),
        pytest.param(expired, id="an_expires_in_the_past"),
        pytest.param(malformed_expires, id="a_malformed_expires"),
        pytest.param(far_expires, id="an_expires_a_month_ahead"),
    ],
)
async def test_a_request_its_signature_does_not_prove_is_refused_401_and_nothing_runs(
    stack: Stack, world: World, spoil: Any, kind: str, method: Method
) -> None:
    params = spoil(stack, world, kind)
    async with stack.http(None) as http:
        response = await send(http, params, method)
    command = dict(params)["command"]
    inner = refusal(response, 401, command)
    for secret in (world.a.secret_key, world.b.secret_key):
        assert secret not in response.text
    assert "unable to verify" in inner["errortext"]
    await assert_a_untouched(stack, world)


async def test_a_replayed_request_is_refused_401_once_its_expires_has_passed(
    stack: Stack, world: World
) -> None:
    # `expires` is to the second: the request is valid until the end of that second.
    soon = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    request = signed(world.a, expiring({"command": "listVirtualMachines"}, soon))
    async with stack.http(None) as http:
        first = await send(http, request)
        assert [v["id"] for v in listed(first, "listVirtualMachines", "virtualmachine")] == [
            world.a_vm["id"]
        ]
        seen: list[int] = []

        async def replay() -> httpx.Response:
            response = await send(http, request)
            seen.append(response.status_code)
            return response

        last = await wait_until(
            replay,
            lambda response: response.status_code != 200,
            timeout=20,
            interval=0.2,
            what="the replayed request to be refused after its expires",
        )
    refusal(last, 401, "listVirtualMachines")
    assert "expired" in last.json()["listvirtualmachinesresponse"]["errortext"]
    # Accepted while valid (CloudStack has no nonce), then refused for good: no flapping.
    assert set(seen[:-1]) <= {200}
    assert datetime.now(UTC) > soon


# -- disabled accounts and users -------------------------------------------------------------
@pytest.mark.parametrize("what", ["accounts", "users"])
async def test_a_disabled_account_or_user_is_refused_531_and_works_again_once_enabled(
    stack: Stack, what: str
) -> None:
    async with stack.http() as admin:
        tenant = await new_tenant(admin)
        target = tenant.account_id if what == "accounts" else tenant.user_id
        params = signed(tenant, {"command": "listVirtualMachines"})
        async with stack.http(None) as http:
            assert listed(await send(http, params), "listVirtualMachines", "virtualmachine") == []
            disabled = await admin.post(f"/v1/{what}/{target}/disable")
            assert disabled.status_code == 200, disabled.text
            for method in METHODS:
                refused = await send(http, params, method)
                assert refused.status_code in (401, 531), refused.text
                inner = refusal(refused, refused.status_code, "listVirtualMachines")
                assert "disabled" in inner["errortext"]
                assert tenant.secret_key not in refused.text
            enabled = await admin.post(f"/v1/{what}/{target}/enable")
            assert enabled.status_code == 200, enabled.text
            for method in METHODS:
                again = await send(http, params, method)
                assert listed(again, "listVirtualMachines", "virtualmachine") == []


# -- tenant isolation ------------------------------------------------------------------------
LISTINGS = {
    "listVirtualMachines": "virtualmachine",
    "listVolumes": "volume",
    "listAsyncJobs": "asyncjobs",
    "listEvents": "event",
    "listUsageRecords": "usagerecord",
}


def today() -> dict[str, str]:
    day = datetime.now(UTC).date().isoformat()
    return {"startdate": day, "enddate": day}


def base_params(command: str) -> dict[str, str]:
    return {"command": command, **(today() if command == "listUsageRecords" else {})}


def mentions_a(item: Mapping[str, Any], world: World) -> bool:
    text = repr(item)
    return any(secret in text for secret in world.secrets_of_a())


async def a_sees_its_own(stack: Stack, world: World, command: str) -> None:
    """A's own listing shows its VM (by id, name, volume or job): what B's must not."""

    async def read() -> list[dict[str, Any]]:
        async with stack.http(None) as http:
            response = await send(http, signed(world.a, base_params(command)))
        return listed(response, command, LISTINGS[command])

    await wait_until(
        read,
        lambda items: any(mentions_a(item, world) for item in items),
        timeout=60,
        interval=0.2,
        what=f"A's {command} to show its VM",
    )


def variants(world: World, command: str) -> list[dict[str, str]]:
    """B's attempts to name A's things: its VM's (or volume's) id, its account by name (with
    and without its domain), by id, and everything B may see."""
    own_id = world.a_volume_id if command == "listVolumes" else world.a_vm["id"]
    return [
        {},
        {"listall": "true"},
        {"id": own_id},
        {"id": world.a_vm["id"], "listall": "true"},
        {"virtualmachineid": world.a_vm["id"]},
        {"account": world.a.name},
        {"account": world.a.name, "domainid": world.a.domain_id},
        {"account": world.a.name, "domainid": world.a.domain_id, "listall": "true"},
        {"accountid": world.a.account_id},
        {"domainid": world.a.domain_id, "listall": "true"},
    ]


@pytest.mark.parametrize("command", list(LISTINGS))
async def test_tenant_b_never_sees_tenant_as_vm_in_a_listing_even_naming_it(
    stack: Stack, world: World, command: str
) -> None:
    await a_sees_its_own(stack, world, command)
    async with stack.http(None) as http:
        for extra in variants(world, command):
            params = signed(world.b, {**base_params(command), **extra})
            for method in METHODS:
                response = await send(http, params, method)
                where = f"{command} {extra} over {method}: {response.text}"
                if response.status_code == 200:
                    items = listed(response, command, LISTINGS[command])
                    assert not any(mentions_a(item, world) for item in items), where
                    text = response.text
                else:
                    assert response.status_code == 531, where
                    text = refusal(response, 531, command)["errortext"]
                    for echoed in extra.values():
                        text = text.replace(echoed, "")
                assert not any(secret in text for secret in world.secrets_of_a()), where
                if "id" in extra and command in ("listVirtualMachines", "listVolumes"):
                    assert response.status_code == 200 and response.json() == {
                        f"{command.lower()}response": {}
                    }, where
                if "account" in extra:
                    # Refused exactly as an account that does not exist is: no oracle.
                    assert response.status_code == 531, where
                    fake = with_nothing_in_place_of_a(world, params)
                    other = await send(http, signed(world.b, fake), method)
                    other_text = refusal(other, 531, command)["errortext"]
                    assert (
                        other_text.replace(fake["account"], world.a.name)
                        == (response.json()[f"{command.lower()}response"]["errortext"])
                    ), (where, other.text)
    if command == "listVirtualMachines":
        async with stack.http(None) as http:
            own = await send(http, signed(world.b, {"command": command}))
        assert [v["id"] for v in listed(own, command, "virtualmachine")] == [world.b_vm["id"]]


def b_acts_on_a(stack: Stack, world: World) -> list[dict[str, str]]:
    return [
        {"command": "stopVirtualMachine", "id": world.a_vm["id"]},
        {"command": "stopVirtualMachine", "id": world.a_vm["id"], "forced": "true"},
        {"command": "destroyVirtualMachine", "id": world.a_vm["id"], "expunge": "true"},
        {"command": "rebootVirtualMachine", "id": world.a_vm["id"]},
        {"command": "queryAsyncJobResult", "jobid": world.a_job_id},
        {"command": "deleteVolume", "id": world.a_volume_id},
        {
            **attempt(stack, world, "deploy", "in-a"),
            "account": world.a.name,
            "domainid": world.a.domain_id,
        },
    ]


def with_nothing_in_place_of_a(world: World, params: Mapping[str, str]) -> dict[str, str]:
    """`params` naming, instead of A's VM, volume, job and account, things that do not exist."""
    fakes = {
        world.a_vm["id"]: str(uuid.uuid4()),
        world.a_volume_id: str(uuid.uuid4()),
        world.a_job_id: str(uuid.uuid4()),
        world.a.name: f"t-{uuid.uuid4().hex[:8]}",
    }
    return {name: fakes.get(value, value) for name, value in params.items()}


@pytest.mark.parametrize("method", METHODS)
async def test_tenant_b_cannot_act_on_tenant_as_vm_nor_tell_it_from_one_that_does_not_exist(
    stack: Stack, world: World, method: Method
) -> None:
    async with stack.http(None) as http:
        for params in b_acts_on_a(stack, world):
            response = await send(http, signed(world.b, params), method)
            where = f"{params} over {method}: {response.text}"
            # 4xx; or 531, CloudStack's "not yours" (ACCOUNT_ERROR), for naming A's account.
            assert 400 <= response.status_code < 500 or response.status_code == 531, where
            inner = refusal(response, response.status_code, params["command"])
            text = inner["errortext"]
            for echoed in params.values():
                text = text.replace(echoed, "")
            assert not any(secret in text for secret in world.secrets_of_a()), where
            # The same answer as for things that do not exist: no oracle of A's ids or name.
            fake = with_nothing_in_place_of_a(world, params)
            other = await send(http, signed(world.b, fake), method)
            assert other.status_code == response.status_code, other.text
            other_text = refusal(other, other.status_code, params["command"])["errortext"]
            for name, value in fake.items():
                other_text = other_text.replace(value, params[name])
            assert other_text == inner["errortext"], (where, other.text)
    await assert_a_untouched(stack, world)


async def test_a_domain_admin_lists_its_subtrees_vms_and_not_others(
    stack: Stack, world: World
) -> None:
    async with stack.http(None) as http:

        async def vm_ids(**extra: str) -> set[str]:
            params = signed(world.boss, {"command": "listVirtualMachines", **extra})
            return {v["id"] for v in listed(await send(http, params), *VMS)}

        everything = await vm_ids(listall="true")
        assert world.a_vm["id"] in everything and world.b_vm["id"] not in everything
        assert await vm_ids() == set()  # its own account has none
        assert await vm_ids(account=world.a.name, domainid=world.a.domain_id) == {world.a_vm["id"]}
        assert await vm_ids(id=world.a_vm["id"]) == {world.a_vm["id"]}
        assert await vm_ids(id=world.b_vm["id"]) == set()
        refused = await send(
            http,
            signed(
                world.boss,
                {
                    "command": "listVirtualMachines",
                    "account": world.b.name,
                    "domainid": world.b.domain_id,
                },
            ),
        )
        assert world.b_vm["name"] not in refusal(refused, 531, "listVirtualMachines")["errortext"]
        volumes = await send(
            http, signed(world.boss, {"command": "listVolumes", "listall": "true"})
        )
        volume_vms = {v.get("virtualmachineid") for v in listed(volumes, "listVolumes", "volume")}
        assert world.a_vm["id"] in volume_vms and world.b_vm["id"] not in volume_vms


async def test_a_domain_admin_cannot_act_on_a_vm_outside_its_subtree(
    stack: Stack, world: World
) -> None:
    async with stack.http(None) as http:
        for params in (
            {"command": "stopVirtualMachine", "id": world.b_vm["id"]},
            {"command": "destroyVirtualMachine", "id": world.b_vm["id"], "expunge": "true"},
            {"command": "queryAsyncJobResult", "jobid": world.b_job_id},
        ):
            response = await send(http, signed(world.boss, params))
            assert 400 <= response.status_code < 500, response.text
            inner = refusal(response, response.status_code, params["command"])
            assert world.b_vm["name"] not in inner["errortext"]
    await assert_untouched(stack, world.b, world.b_vm["id"], world.b_job_id)


# -- commands and parameters CloudStack would refuse -----------------------------------------
@pytest.mark.parametrize("command", ["createNetwork", "associateIpAddress"])
async def test_a_command_stratus_does_not_offer_yet_answers_432_naming_it(
    stack: Stack, world: World, command: str
) -> None:
    async with stack.http(None) as http:
        for method in METHODS:
            response = await send(http, signed(world.a, {"command": command}), method)
            inner = refusal(response, 432, None)
            assert command in inner["errortext"] and "not offered" in inner["errortext"]


async def test_an_unknown_command_answers_432_naming_it(stack: Stack, world: World) -> None:
    async with stack.http(None) as http:
        for method in METHODS:
            response = await send(http, signed(world.a, {"command": "launchRockets"}), method)
            assert "launchRockets" in refusal(response, 432, None)["errortext"]


@pytest.mark.parametrize("method", METHODS)
async def test_a_deploy_without_zoneid_answers_431_naming_it_and_deploys_nothing(
    stack: Stack, world: World, method: Method
) -> None:
    params = attempt(stack, world, "deploy")
    del params["zoneid"]
    async with stack.http(None) as http:
        response = await send(http, signed(world.a, params), method)
    inner = refusal(response, 431, "deployVirtualMachine")
    assert "missing parameter zoneid" in inner["errortext"]
    await assert_a_untouched(stack, world)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"name": "web\x00server"}, id="deploy_name"),
        pytest.param({"displayname": "\x00"}, id="deploy_displayname"),
        pytest.param({"command": "stopVirtualMachine", "id": "\x00"}, id="stop_id"),
        pytest.param({"command": "listVirtualMachines", "zoneid": "a\x00b"}, id="list_zoneid"),
    ],
)
async def test_a_nul_byte_in_a_parameter_answers_431_never_500(
    stack: Stack, world: World, method: Method, params: dict[str, str]
) -> None:
    request = {**attempt(stack, world, "deploy"), **params}
    if request["command"] != "deployVirtualMachine":
        request = params
    async with stack.http(None) as http:
        response = await send(http, signed(world.a, request), method)
    inner = refusal(response, 431, request["command"])
    assert "\x00" not in inner["errortext"]
    await assert_a_untouched(stack, world)


@pytest.mark.parametrize(
    ("method", "where"),
    [("GET", "query"), ("POST", "body"), ("POST", "query_and_body")],
)
async def test_a_parameter_given_twice_answers_430_and_nothing_runs(
    stack: Stack, world: World, method: Method, where: str
) -> None:
    params = signed(world.a, attempt(stack, world, "deploy", "twice"))
    async with stack.http(None) as http:
        if where == "query_and_body":
            response = await send(http, params, method, query=[("name", "never-other")])
        else:
            response = await send(http, [*params.items(), ("name", "never-other")], method)
    assert "name" in refusal(response, 430, None)["errortext"]
    await assert_a_untouched(stack, world)


@pytest.mark.parametrize("method", METHODS)
async def test_list_usage_records_ending_on_the_last_day_of_the_calendar_answers_431_not_530(
    stack: Stack, world: World, method: Method
) -> None:
    params = {"command": "listUsageRecords", "startdate": "2026-01-01", "enddate": "9999-12-31"}
    async with stack.http(None) as http:
        response = await send(http, signed(world.a, params), method)
    assert "enddate" in refusal(response, 431, "listUsageRecords")["errortext"]
