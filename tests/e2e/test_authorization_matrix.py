"""Who may call what: every operation of the OpenAPI document × every role, checked for real.

`TABLE` has one row per operation (method and path template, as the live `GET /openapi.json`
lists them): the outcome each role must get when it asks about the OWNER's resources. A new
endpoint without a row fails `test_the_table_covers_every_operation_of_the_document`, naming it;
a row no operation has any more fails it too.

Outcomes: `A` allowed (authorization passed: any status but 401, 403 and 404), `F` forbidden
(403), `H` hidden (404, exactly as the answer about something that does not exist). A row's
letters are, in order: the root admin, the domain admin of domain P, the owner (a user in the
subdomain P/D), the outsider (a user of another domain Q) and a foreign admin (the domain admin
of Q). `OPEN` rows need no key; every other operation answers 401 without a key or with an
unknown one.

How each request is made, by what the document says of the operation:

- a denial (F, H) and the 401s: a well-formed request, with a valid body, about the owner's
  resources. A denied request has no effect; a hidden one is asked again about ids that do not
  exist, and must be answered the same way.
- an allowance (A) of a GET: the GET, for real (2xx).
- an allowance of an operation that submits a job (it takes `Idempotency-Key`), twice:
  1. the valid request with a 300-character key (at most 255): it stops at 422 on that header
     alone, after the authorization dependencies (`require_admin`, ...), which FastAPI runs
     before it validates parameters (`test_authorization_is_settled_before_parameters_are_
     validated`), and before the handler. The 422 names the header only: the body is valid.
  2. the valid request with the key the role used for its seed job: the handler's own checks
     run (ownership, state), then the submission meets the seed job and refuses with 409
     (or the resource's state does): nothing is submitted.
- an allowance of another operation with a body: a body its schema refuses (422 on the body);
  those whose effect is harmless (`BODY_RUNS`: an account, a user, a domain below the owner's
  domain, a limit set to -1 as it is, a skip refused) also run for real with a valid body.
- an allowance of the rest (`ACTIONS`: disable, enable, new keys, delete a domain, cancel a job,
  retry a projection, remove a fault): for real, against targets made for it (a throwaway
  account, user and domain per admin, a fault) or where it changes nothing (cancelling an ended
  job is a 409), one at a time in the order `ACTIONS` gives (disable before enable).

The other tests: the listings leave no trace of another tenant (the outsider's and the foreign
admin's never hold any of the owner's ids, also when filtered by them; the domain admin's and the
root admin's show them); filters naming another account or a host are refused; what a body names
of another tenant's answers as a missing one; and the rules the table cannot show with the
owner's resources (a domain admin never acts on its own account or domain; a user registers its
own keys only).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from api import models, projection_admin, tenancy_models
from domain.alert import AlertType, raise_alert
from domain.domain_tree import ROOT_DOMAIN_ID
from tests.e2e.conftest import Stack, deploy_order, wait_for_job
from tests.e2e.tenants import Tenant, new_domain, new_tenant
from tests.support import ADMIN_KEY

# -- the table ---------------------------------------------------------------------------------
ALLOWED, FORBIDDEN, HIDDEN = "A", "F", "H"
OUTCOMES = {ALLOWED: "allowed", FORBIDDEN: "forbidden (403)", HIDDEN: "hidden (404)"}
#: The roles a row's letters are for, in order.
ROLES = ("admin", "domain_admin", "owner", "outsider", "foreign_admin")
#: Callers the admission refuses (401) everywhere but on the open paths.
NOBODY = ("no_key", "unknown_key")
#: No key needed: anyone gets an answer.
OPEN = "open"

TABLE: dict[tuple[str, str], str] = {
    # health: no key
    ("GET", "/healthz"): OPEN,
    ("GET", "/livez"): OPEN,
    # accounts and users: tenancy, for admins within their subtree
    ("GET", "/v1/accounts"): "AAAAA",
    ("POST", "/v1/accounts"): "AAFFH",
    ("GET", "/v1/accounts/{account_id}"): "AAAHH",
    ("POST", "/v1/accounts/{account_id}/disable"): "AAFFH",
    ("POST", "/v1/accounts/{account_id}/enable"): "AAFFH",
    ("GET", "/v1/accounts/{account_id}/limits"): "AAAHH",
    ("PUT", "/v1/accounts/{account_id}/limits/{resource_type}"): "AAFFH",
    ("GET", "/v1/accounts/{account_id}/users"): "AAAHH",
    ("POST", "/v1/accounts/{account_id}/users"): "AAFFH",
    ("GET", "/v1/users/{user_id}"): "AAAHH",
    ("POST", "/v1/users/{user_id}/disable"): "AAFFH",
    ("POST", "/v1/users/{user_id}/enable"): "AAFFH",
    ("POST", "/v1/users/{user_id}/keys"): "AAAHH",
    # domains
    ("GET", "/v1/domains"): "AAAAA",
    ("POST", "/v1/domains"): "AAFFH",
    ("GET", "/v1/domains/{domain_id}"): "AAAHH",
    ("DELETE", "/v1/domains/{domain_id}"): "AAFFH",
    ("GET", "/v1/domains/{domain_id}/limits"): "AAAHH",
    ("PUT", "/v1/domains/{domain_id}/limits/{resource_type}"): "AAFFH",
    # what users choose from
    ("GET", "/v1/zones"): "AAAAA",
    ("GET", "/v1/zones/{item_id}"): "AAAAA",
    ("GET", "/v1/networks"): "AAAAA",
    ("GET", "/v1/networks/{item_id}"): "AAAAA",
    ("GET", "/v1/service-offerings"): "AAAAA",
    ("GET", "/v1/service-offerings/{item_id}"): "AAAAA",
    ("GET", "/v1/disk-offerings"): "AAAAA",
    ("GET", "/v1/disk-offerings/{item_id}"): "AAAAA",
    ("GET", "/v1/templates"): "AAAAA",
    # The owner's private template: its owner's business, and its administrators'.
    ("GET", "/v1/templates/{item_id}"): "AAAHH",
    # infrastructure: the root admin's only
    ("GET", "/v1/pods"): "AFFFF",
    ("GET", "/v1/pods/{item_id}"): "AFFFF",
    ("GET", "/v1/clusters"): "AFFFF",
    ("POST", "/v1/clusters"): "AFFFF",
    ("GET", "/v1/clusters/{item_id}"): "AFFFF",
    ("GET", "/v1/hosts"): "AFFFF",
    ("POST", "/v1/hosts"): "AFFFF",
    ("GET", "/v1/hosts/{host_id}"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/maintenance"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/cancel-maintenance"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/enable"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/disable"): "AFFFF",
    ("POST", "/v1/clusters/{cluster_id}/enable"): "AFFFF",
    ("POST", "/v1/clusters/{cluster_id}/disable"): "AFFFF",
    ("PUT", "/v1/hosts/{host_id}/out-of-band-management"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/out-of-band-management/enable"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/out-of-band-management/disable"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/power"): "AFFFF",
    ("PUT", "/v1/clusters/{cluster_id}/ha"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/ha/enable"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/ha/disable"): "AFFFF",
    ("POST", "/v1/hosts/{host_id}/declare-fenced"): "AFFFF",
    ("GET", "/v1/alerts"): "AFFFF",
    ("GET", "/v1/alerts/{alert_id}"): "AFFFF",
    ("POST", "/v1/alerts/{alert_id}/archive"): "AFFFF",
    ("GET", "/v1/storage-pools"): "AFFFF",
    ("POST", "/v1/storage-pools"): "AFFFF",
    ("GET", "/v1/storage-pools/{item_id}"): "AFFFF",
    ("GET", "/v1/secondary-storage"): "AFFFF",
    ("GET", "/v1/secondary-storage/{item_id}"): "AFFFF",
    ("GET", "/v1/simulator/faults"): "AFFFF",
    ("POST", "/v1/simulator/faults"): "AFFFF",
    ("DELETE", "/v1/simulator/faults/{fault_id}"): "AFFFF",
    ("GET", "/v1/projections"): "AFFFF",
    ("GET", "/v1/projections/{projection}"): "AFFFF",
    ("POST", "/v1/projections/{projection}/retry"): "AFFFF",
    ("GET", "/v1/projections/{projection}/skips"): "AFFFF",
    ("POST", "/v1/projections/{projection}/skips"): "AFFFF",
    # virtual machines
    ("GET", "/v1/virtual-machines"): "AAAAA",
    ("POST", "/v1/virtual-machines"): "AAAAA",
    ("GET", "/v1/virtual-machines/{vm_id}"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/start"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/stop"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/reboot"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/destroy"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/recover"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/expunge"): "AAAHH",
    # CloudStack's migrateVirtualMachine is the root admin's: users never see hosts.
    ("POST", "/v1/virtual-machines/{vm_id}/migrate"): "AFFFF",
    ("POST", "/v1/virtual-machines/{vm_id}/change-service-offering"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/restore"): "AAAHH",
    ("GET", "/v1/virtual-machines/{vm_id}/jobs"): "AAAHH",
    ("GET", "/v1/virtual-machines/{vm_id}/snapshots"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/snapshots"): "AAAHH",
    ("POST", "/v1/virtual-machines/{vm_id}/snapshots/{sid}/revert"): "AAAHH",
    ("DELETE", "/v1/virtual-machines/{vm_id}/snapshots/{sid}"): "AAAHH",
    # volumes (migrateVolume is a user command in CloudStack too)
    ("GET", "/v1/volumes"): "AAAAA",
    ("POST", "/v1/volumes"): "AAAAA",
    ("GET", "/v1/volumes/{volume_id}"): "AAAHH",
    ("DELETE", "/v1/volumes/{volume_id}"): "AAAHH",
    ("POST", "/v1/volumes/{volume_id}/attach"): "AAAHH",
    ("POST", "/v1/volumes/{volume_id}/detach"): "AAAHH",
    ("POST", "/v1/volumes/{volume_id}/resize"): "AAAHH",
    ("POST", "/v1/volumes/{volume_id}/migrate"): "AAAHH",
    ("GET", "/v1/volumes/{volume_id}/jobs"): "AAAHH",
    ("POST", "/v1/volumes/{volume_id}/snapshots"): "AAAHH",
    # volume snapshots
    ("GET", "/v1/snapshots"): "AAAAA",
    ("GET", "/v1/snapshots/{snapshot_id}"): "AAAHH",
    ("DELETE", "/v1/snapshots/{snapshot_id}"): "AAAHH",
    ("POST", "/v1/snapshots/{snapshot_id}/revert"): "AAAHH",
    ("POST", "/v1/snapshots/{snapshot_id}/volumes"): "AAAHH",
    ("POST", "/v1/snapshots/{snapshot_id}/templates"): "AAAHH",
    # snapshot policies (the POST names the owner's volume in its body)
    ("GET", "/v1/snapshot-policies"): "AAAAA",
    ("POST", "/v1/snapshot-policies"): "AAAHH",
    ("GET", "/v1/snapshot-policies/{policy_id}"): "AAAHH",
    ("DELETE", "/v1/snapshot-policies/{policy_id}"): "AAAHH",
    # jobs
    ("GET", "/v1/jobs"): "AAAAA",
    ("GET", "/v1/jobs/{job_id}"): "AAAHH",
    ("POST", "/v1/jobs/{job_id}/cancel"): "AAAHH",
    # events and usage: each caller's own scope
    ("GET", "/v1/events"): "AAAAA",
    ("GET", "/v1/usage-types"): "AAAAA",
    ("GET", "/v1/usage-records"): "AAAAA",
    ("GET", "/v1/usage-records/export"): "AAAAA",
    ("GET", "/v1/usage-records/summary"): "AAAAA",
    ("GET", "/v1/usage-corrections"): "AAAAA",
}

#: An over-long `Idempotency-Key` (the header takes at most 255 characters).
OVERLONG_KEY = "k" * 300
#: A JSON body no operation's schema takes (every body is an object).
UNACCEPTABLE_BODY: list[Any] = []
#: Requests in flight at once per role (the API's thread pool and database pool are finite).
CONCURRENCY = 16


def expected(row: str, role: str) -> str:
    if row == OPEN:
        return ALLOWED
    if role in NOBODY:
        return "unauthorized"
    return row[ROLES.index(role)]


# -- the operations, as the document describes them --------------------------------------------
@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    path_parameters: tuple[str, ...]
    required_query: tuple[str, ...]
    takes_idempotency_key: bool
    body_schema: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    @property
    def kind(self) -> str:
        """How an allowance is checked: read, job, body or action (see the module's doc)."""
        if self.method == "GET":
            return "read"
        if self.takes_idempotency_key:
            return "job"
        if self.body_schema is not None:
            return "body"
        return "action"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def operations_of(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            parameters = operation.get("parameters", [])
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    path_parameters=tuple(p["name"] for p in parameters if p["in"] == "path"),
                    required_query=tuple(
                        p["name"] for p in parameters if p["in"] == "query" and p.get("required")
                    ),
                    takes_idempotency_key=any(
                        p["in"] == "header" and p["name"].lower() == "idempotency-key"
                        for p in parameters
                    ),
                    body_schema=_schema_name(body["schema"]) if body else None,
                )
            )
    return found


def _schema_name(schema: dict[str, Any]) -> str:
    for branch in [schema, *schema.get("anyOf", [])]:
        if "$ref" in branch:
            return str(branch["$ref"]).rsplit("/", 1)[-1]
    raise AssertionError(f"a request body without a named schema: {schema}")


# -- the world the requests are about -----------------------------------------------------------
@dataclass
class Throwaway:
    """What a role's real actions (disable, enable, keys, delete) are done to."""

    account_id: str
    user_id: str
    domain_id: str


@dataclass
class World:
    stack: Stack
    #: Each role's API key; the owner's changes when it registers new keys.
    keys: dict[str, str | None]
    #: Path parameter -> the owner's resource it names (or the admin-only thing).
    ids: dict[str, str]
    #: Inventory path (zones, pods, ...) -> the item its `{item_id}` names.
    items: dict[str, str]
    #: What the owner has, by name: no listing of another tenant may show any of them.
    owner_ids: dict[str, str]
    throwaway: dict[str, Throwaway]
    root_volume_id: str
    usage_start: str
    usage_end: str
    #: The Idempotency-Key each role used for its seed job (a volume).
    seed_key: str
    #: Each role's seed volume.
    seed_volumes: dict[str, str]
    #: P (the domain admin's), P/D (the owner's) and Q (the outsider's and foreign admin's).
    domains: dict[str, str]
    #: Another user of the owner's account.
    colleague_id: str
    tenants: dict[str, Tenant] = field(default_factory=dict)

    def http(self, role: str) -> httpx.AsyncClient:
        return self.stack.http(self.keys[role])


def valid_body(op: Operation, world: World) -> Any:
    """A body the operation's schema takes, about the owner's resources."""
    zone = world.stack.zone
    name = f"authz-{uuid.uuid4().hex[:8]}"
    bodies: dict[tuple[str, str], Callable[[], Any]] = {
        ("POST", "/v1/accounts"): lambda: {
            "name": name,
            "account_type": "User",
            "domain_id": world.ids["domain_id"],
        },
        # -1 (unlimited) is every limit's default: setting it changes nothing.
        ("PUT", "/v1/accounts/{account_id}/limits/{resource_type}"): lambda: {"max": -1},
        ("POST", "/v1/accounts/{account_id}/users"): lambda: {"username": name},
        ("POST", "/v1/domains"): lambda: {"name": name, "parent_id": world.ids["domain_id"]},
        ("PUT", "/v1/domains/{domain_id}/limits/{resource_type}"): lambda: {"max": -1},
        ("POST", "/v1/clusters"): lambda: {
            "pod_id": str(zone.pod_id),
            "name": name,
            "hypervisor": "Simulator",
        },
        ("POST", "/v1/hosts"): lambda: {
            "cluster_id": str(zone.cluster_ids[0]),
            "name": name,
            "address": "192.0.2.10",
        },
        ("PUT", "/v1/hosts/{host_id}/out-of-band-management"): lambda: {
            "driver": "ipmitool",
            "address": "192.0.2.10",
        },
        ("POST", "/v1/hosts/{host_id}/power"): lambda: {"action": "STATUS"},
        ("PUT", "/v1/clusters/{cluster_id}/ha"): lambda: {"monitor_interval": 30},
        ("POST", "/v1/storage-pools"): lambda: {
            "name": name,
            "scope": "CLUSTER",
            "cluster_id": str(zone.cluster_ids[0]),
            "path": "/export/authz",
            "capacity_bytes": 2**40,
        },
        ("POST", "/v1/simulator/faults"): lambda: {
            "operation": "host_capacity",
            "action": "delay",
            "host_id": str(zone.host_ids[0]),
            "delay_seconds": 0,
        },
        ("POST", "/v1/projections/{projection}/skips"): lambda: {
            "notification_id": 1,
            "reason": "authorization matrix",
        },
        ("POST", "/v1/virtual-machines"): lambda: deploy_order(world.stack, name="authz-vm"),
        ("POST", "/v1/virtual-machines/{vm_id}/stop"): lambda: {"forced": False},
        ("POST", "/v1/virtual-machines/{vm_id}/destroy"): lambda: {"expunge": False},
        ("POST", "/v1/virtual-machines/{vm_id}/migrate"): lambda: {
            "host_id": str(zone.host_ids[1])
        },
        ("POST", "/v1/virtual-machines/{vm_id}/change-service-offering"): lambda: {
            "service_offering_id": str(zone.medium_offering_id)
        },
        ("POST", "/v1/virtual-machines/{vm_id}/restore"): lambda: {
            "template_id": str(zone.template_id)
        },
        ("POST", "/v1/virtual-machines/{vm_id}/snapshots"): lambda: {"name": name},
        ("POST", "/v1/volumes"): lambda: {
            "zone_id": str(zone.zone_id),
            "disk_offering_id": str(zone.disk_offering_id),
            "name": name,
        },
        ("POST", "/v1/volumes/{volume_id}/attach"): lambda: {"vm_id": world.ids["vm_id"]},
        ("POST", "/v1/volumes/{volume_id}/resize"): lambda: {"size_gib": 20},
        ("POST", "/v1/volumes/{volume_id}/migrate"): lambda: {"pool_id": str(zone.pool_ids[1])},
        ("POST", "/v1/volumes/{volume_id}/snapshots"): lambda: {"name": name},
        ("POST", "/v1/snapshots/{snapshot_id}/volumes"): lambda: {"name": name},
        ("POST", "/v1/snapshots/{snapshot_id}/templates"): lambda: {"name": name},
        ("POST", "/v1/snapshot-policies"): lambda: {
            "volume_id": world.root_volume_id,
            "interval_type": "DAILY",
            "schedule": "30:02",
            "timezone": "UTC",
            "max_snaps": 2,
        },
    }
    make = bodies.get(op.key)
    assert make is not None, f"{op}: no valid body known: add one to `valid_body`"
    return make()


def query_of(op: Operation, world: World) -> dict[str, str]:
    known = {"start": world.usage_start, "end": world.usage_end}
    missing = [name for name in op.required_query if name not in known]
    assert not missing, f"{op}: no value known for the required query parameters {missing}"
    return {name: known[name] for name in op.required_query}


def fill(op: Operation, world: World, overrides: dict[str, str] | None = None) -> str:
    values = {**world.ids, **(overrides or {})}
    path = op.path
    for name in op.path_parameters:
        # `{item_id}` names an inventory item of the kind its path says (zones, pods, ...).
        value = world.items.get(op.path.split("/")[2]) if name == "item_id" else values.get(name)
        assert value is not None, f"{op}: no value known for the path parameter {name!r}"
        path = path.replace("{" + name + "}", value)
    return path


# -- the actions run for real --------------------------------------------------------------------
Targets = Callable[[World, str], dict[str, str] | None]
After = Callable[[World, str, httpx.Response], None]


@dataclass(frozen=True)
class Action:
    """An operation with neither a job nor a body: its allowances run for real."""

    #: Within a role, actions run in this order (an account is disabled, then enabled).
    order: int
    #: The path parameters for a role (default: the owner's resources, for an action that
    #: changes nothing of them).
    targets: Targets = lambda world, role: {}
    #: The statuses it may answer, authorization passed.
    answers: frozenset[int] = frozenset({200, 201, 202, 204})
    after: After | None = None


def _throwaway(name: str) -> Targets:
    def targets(world: World, role: str) -> dict[str, str] | None:
        if role not in world.throwaway:
            return None
        return {name: getattr(world.throwaway[role], name)}

    return targets


def _own_user(world: World, role: str) -> dict[str, str] | None:
    """A user registers its own keys; an admin, the keys of a throwaway user."""
    if role == "owner":
        return {}
    return _throwaway("user_id")(world, role)


def _new_owner_key(world: World, role: str, response: httpx.Response) -> None:
    if role == "owner":
        world.keys["owner"] = response.json()["api_key"]


ACTIONS: dict[tuple[str, str], Action] = {
    ("POST", "/v1/accounts/{account_id}/disable"): Action(1, _throwaway("account_id")),
    ("POST", "/v1/users/{user_id}/disable"): Action(1, _throwaway("user_id")),
    ("DELETE", "/v1/domains/{domain_id}"): Action(1, _throwaway("domain_id")),
    # The owner's jobs have ended: cancelling one is a 409 that changes nothing.
    ("POST", "/v1/jobs/{job_id}/cancel"): Action(1, answers=frozenset({409})),
    ("POST", "/v1/projections/{projection}/retry"): Action(1, answers=frozenset({202, 409})),
    ("DELETE", "/v1/simulator/faults/{fault_id}"): Action(1),
    ("POST", "/v1/accounts/{account_id}/enable"): Action(2, _throwaway("account_id")),
    ("POST", "/v1/users/{user_id}/enable"): Action(2, _throwaway("user_id")),
    ("POST", "/v1/users/{user_id}/keys"): Action(3, _own_user, after=_new_owner_key),
}

#: Operations with a body whose allowances also run for real, with a valid body: what they
#: make is harmless (an account, a user, a domain below the owner's domain), a limit is set to
#: what it is (-1), a skip is refused (409: the projection is not blocked).
BODY_RUNS: dict[tuple[str, str], frozenset[int]] = {
    ("POST", "/v1/accounts"): frozenset({201}),
    ("POST", "/v1/accounts/{account_id}/users"): frozenset({201}),
    ("PUT", "/v1/accounts/{account_id}/limits/{resource_type}"): frozenset({200}),
    ("POST", "/v1/domains"): frozenset({201}),
    ("PUT", "/v1/domains/{domain_id}/limits/{resource_type}"): frozenset({200}),
    ("POST", "/v1/projections/{projection}/skips"): frozenset({409}),
}


# -- requests and their checks ------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    op: Operation
    url: str
    params: dict[str, str]
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    how: str = "valid request"

    async def send(self, http: httpx.AsyncClient) -> httpx.Response:
        content = None if self.body is None else json.dumps(self.body)
        headers = dict(self.headers)
        if content is not None:
            headers["Content-Type"] = "application/json"
        return await http.request(
            self.op.method, self.url, params=self.params, content=content, headers=headers
        )


def valid_call(op: Operation, world: World, overrides: dict[str, str] | None = None) -> Call:
    return Call(
        op,
        fill(op, world, overrides),
        query_of(op, world),
        valid_body(op, world) if op.body_schema is not None else None,
    )


@dataclass(frozen=True)
class Allowance:
    """A request showing that a role is allowed, and the answers that show it."""

    call: Call
    answers: frozenset[int]
    wanted: str
    #: A 422 must name only this place (the over-long header, or the body).
    refused_at: tuple[str, ...] | None = None

    def failure(self, role: str, response: httpx.Response) -> str | None:
        status = response.status_code
        ok = status in self.answers
        if ok and status == 422 and self.refused_at is not None:
            places = {tuple(loc[: len(self.refused_at)]) for loc in error_locations(response)}
            ok = places == {self.refused_at}
        return None if ok else describe(self.call, role, response, self.wanted)


SUCCESS = frozenset(range(200, 300))
#: What a job's submission answers when it passed authorization but submits nothing: the
#: Idempotency-Key was used for another request (409), or the resource's state refuses it.
REFUSED_AFTER_AUTHORIZATION = frozenset({409})


def allowances(op: Operation, world: World, role: str) -> list[Allowance]:
    """The requests that show an allowance without side effects that matter."""
    call = valid_call(op, world)
    if op.kind == "read":
        if op.path in ("/healthz", "/livez"):
            return [Allowance(call, frozenset({200, 503}), "200 or 503 (open)")]
        return [Allowance(call, SUCCESS, "2xx (allowed)")]
    if op.kind == "job":
        overlong = replace(
            call,
            headers={"Idempotency-Key": OVERLONG_KEY},
            how="valid request with an over-long Idempotency-Key",
        )
        # The same request with the key the role used for its seed job: the handler's own
        # checks (ownership, state) run, then the submission meets the seed job and refuses.
        reused = replace(
            call,
            headers={"Idempotency-Key": world.seed_key},
            how="valid request with an Idempotency-Key used for another request",
        )
        return [
            Allowance(
                overlong,
                frozenset({422}),
                "422 on the Idempotency-Key alone (allowed)",
                ("header", "Idempotency-Key"),
            ),
            Allowance(
                reused,
                REFUSED_AFTER_AUTHORIZATION,
                f"one of {sorted(REFUSED_AFTER_AUTHORIZATION)}, nothing submitted (allowed)",
            ),
        ]
    if op.kind == "body":
        refused = replace(call, body=UNACCEPTABLE_BODY, how="body its schema refuses")
        found = [
            Allowance(refused, frozenset({422}), "422 on the body (allowed)", ("body",)),
        ]
        if op.key in BODY_RUNS:
            answers = BODY_RUNS[op.key]
            found.append(Allowance(call, answers, f"one of {sorted(answers)} (allowed)"))
        return found
    raise AssertionError(f"{op}: actions are run by `action_allowance`")


def action_allowance(op: Operation, world: World, role: str) -> Allowance | str:
    """An action's allowance, run for real on its targets (or why there is none)."""
    action = ACTIONS[op.key]
    targets = action.targets(world, role)
    if targets is None:
        return f"{op} as {role}: allowed by the table, but no throwaway target is made for it"
    call = valid_call(op, world, targets)
    return Allowance(call, action.answers, f"one of {sorted(action.answers)} (allowed)")


def describe(call: Call, role: str, response: httpx.Response, wanted: str) -> str:
    return (
        f"{call.op.method} {call.op.path} as {role}: got {response.status_code}, expected "
        f"{wanted} ({call.how}: {call.op.method} {call.url}) {response.text[:300]}"
    )


def error_locations(response: httpx.Response) -> list[list[Any]]:
    try:
        detail = response.json().get("detail", [])
    except ValueError:
        return []
    return [list(d.get("loc", [])) for d in detail if isinstance(d, dict)]


def swapped(text: str, mapping: dict[str, str]) -> str:
    for old, new in mapping.items():
        text = text.replace(old, new)
    return text


async def check_denial(
    call: Call, role: str, outcome: str, http: httpx.AsyncClient, world: World
) -> str | None:
    response = await call.send(http)
    wanted = {FORBIDDEN: 403, HIDDEN: 404, "unauthorized": 401}[outcome]
    if response.status_code != wanted:
        label = OUTCOMES.get(outcome, "401 (no key or an unknown key)")
        return describe(call, role, response, label)
    if outcome != HIDDEN:
        return None
    # Hidden: answered exactly as the same request about ids nobody has.
    fresh = {owned: str(uuid.uuid4()) for owned in world.owner_ids.values()}
    body = None if call.body is None else json.loads(swapped(json.dumps(call.body), fresh))
    twin = Call(call.op, swapped(call.url, fresh), call.params, body, call.headers, call.how)
    missing = await twin.send(http)
    back = {new: old for old, new in fresh.items()}
    if (missing.status_code, swapped(missing.text, back)) != (404, response.text):
        return (
            f"{call.op.method} {call.op.path} as {role}: the owner's resource is not answered "
            f"as a missing one: {response.status_code} {response.text[:300]} vs "
            f"{missing.status_code} {swapped(missing.text, back)[:300]}"
        )
    return None


async def bounded(
    jobs: list[Callable[[], Awaitable[str | None]]], limit: int = CONCURRENCY
) -> list[str]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[str | None]]) -> str | None:
        async with gate:
            return await job()

    return [f for f in await asyncio.gather(*(run(j) for j in jobs)) if f is not None]


# -- the fixtures --------------------------------------------------------------------------------
async def succeeded(http: httpx.AsyncClient, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (201, 202), response.text
    accepted: dict[str, Any] = response.json()
    job = await wait_for_job(http, accepted["job_id"])
    assert job["status"] == "succeeded", job
    return accepted


async def read_document(stack: Stack) -> dict[str, Any]:
    async with stack.http(None) as anyone:
        response = await anyone.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture(scope="module")
async def document(stack: Stack) -> dict[str, Any]:
    return await read_document(stack)


@pytest.fixture(scope="module")
async def world(stack: Stack) -> AsyncIterator[World]:
    """Domains P, P/D and Q; the domain admin of P; the owner in P/D, with a colleague (another
    user of its account), a VM, a data volume, a snapshot of the VM's root volume, a VM
    snapshot, a snapshot policy and a private template made from the snapshot; the outsider and
    the foreign admin in Q; for each admin's real actions a throwaway account (with its user)
    and domain in P/D, and a harmless simulator fault (a delay of 0 s); each role's seed job."""
    zone = stack.zone
    async with stack.http() as admin:
        parent = await new_domain(admin)
        sub, other = await asyncio.gather(new_domain(admin, parent["id"]), new_domain(admin, None))
        domain_admin, owner, outsider, foreign_admin, spare_a, spare_d = await asyncio.gather(
            new_tenant(admin, account_type="DomainAdmin", domain_id=parent["id"]),
            new_tenant(admin, domain_id=sub["id"]),
            new_tenant(admin, domain_id=other["id"]),
            new_tenant(admin, account_type="DomainAdmin", domain_id=other["id"]),
            new_tenant(admin, domain_id=sub["id"]),
            new_tenant(admin, domain_id=sub["id"]),
        )
        spare_domain_a, spare_domain_d = await asyncio.gather(
            new_domain(admin, sub["id"]), new_domain(admin, sub["id"])
        )
        # Another user of the owner's account.
        colleague = await admin.post(
            f"/v1/accounts/{owner.account_id}/users", json={"username": "colleague"}
        )
        assert colleague.status_code == 201, colleague.text
        fault = await admin.post(
            "/v1/simulator/faults",
            json={
                "operation": "host_capacity",
                "action": "delay",
                "host_id": str(zone.host_ids[0]),
                "delay_seconds": 0,
            },
        )
        assert fault.status_code == 201, fault.text
        projections = await admin.get("/v1/projections")
        assert projections.status_code == 200, projections.text
        projection = projections.json()["data"][0]["projection"]
        # An alert about the zone's first host, as the control plane raises them.
        alert_id = str(
            stack.cloud.decide(
                lambda d: raise_alert(
                    d,
                    AlertType.HOST,
                    "authorization matrix alert",
                    "raised for the matrix",
                    resource_type="Host",
                    resource_id=zone.host_ids[0],
                    zone_id=zone.zone_id,
                    cluster_id=zone.cluster_ids[0],
                    at=datetime.now(UTC),
                    command_id=f"authz/{uuid.uuid4()}",
                )
            ).id
        )
        listed = await admin.get(f"/v1/alerts/{alert_id}", params={"consistent": "true"})
        assert listed.status_code == 200, listed.text

    # Each role's seed job, under a key its allowances reuse (see `allowances`).
    seed_key = f"authz-seed-{uuid.uuid4().hex}"

    async def seed(key: str | None) -> str:
        async with stack.http(key) as http:
            made = await http.post(
                "/v1/volumes",
                json={
                    "zone_id": str(zone.zone_id),
                    "disk_offering_id": str(zone.disk_offering_id),
                    "name": "authz-seed",
                },
                headers={"Idempotency-Key": seed_key},
            )
            return str((await succeeded(http, made))["volume_id"])

    seeding = asyncio.gather(
        *(seed(t.api_key) for t in (domain_admin, owner, outsider, foreign_admin)), seed(ADMIN_KEY)
    )

    async with owner.http(stack) as http:
        deployed, volume = await asyncio.gather(
            succeeded(
                http, await http.post("/v1/virtual-machines", json=deploy_order(stack, name="own"))
            ),
            succeeded(
                http,
                await http.post(
                    "/v1/volumes",
                    json={
                        "zone_id": str(zone.zone_id),
                        "disk_offering_id": str(zone.disk_offering_id),
                        "name": "own-data",
                    },
                ),
            ),
        )
        vm_id = str(deployed["virtual_machine_id"])
        vm = await http.get(f"/v1/virtual-machines/{vm_id}", params={"consistent": "true"})
        root_volume_id = str(vm.json()["root_volume_id"])
        snapshot = await succeeded(
            http, await http.post(f"/v1/volumes/{root_volume_id}/snapshots", json={})
        )
        vm_snapshot, policy, template = await asyncio.gather(
            succeeded(http, await http.post(f"/v1/virtual-machines/{vm_id}/snapshots", json={})),
            succeeded(
                http,
                await http.post(
                    "/v1/snapshot-policies",
                    json={
                        "volume_id": root_volume_id,
                        "interval_type": "DAILY",
                        "schedule": "30:02",
                        "max_snaps": 2,
                    },
                ),
            ),
            succeeded(
                http,
                await http.post(
                    f"/v1/snapshots/{snapshot['snapshot_id']}/templates", json={"name": "own-tpl"}
                ),
            ),
        )
    seed_volumes = dict(
        zip(
            ("domain_admin", "owner", "outsider", "foreign_admin", "admin"),
            await seeding,
            strict=True,
        )
    )
    owner_ids = {
        "account": owner.account_id,
        "user": owner.user_id,
        "domain": sub["id"],
        "vm": vm_id,
        "root volume": root_volume_id,
        "data volume": str(volume["volume_id"]),
        "snapshot": str(snapshot["snapshot_id"]),
        "vm snapshot": str(vm_snapshot["vm_snapshot_id"]),
        "policy": str(policy["snapshot_policy_id"]),
        "deploy job": str(deployed["job_id"]),
        "volume job": str(volume["job_id"]),
        "snapshot job": str(snapshot["job_id"]),
        "vm snapshot job": str(vm_snapshot["job_id"]),
        "policy job": str(policy["job_id"]),
        "template": str(template["template_id"]),
        "template job": str(template["job_id"]),
    }
    now = datetime.now(UTC)
    yield World(
        stack=stack,
        keys={
            "admin": ADMIN_KEY,
            "domain_admin": domain_admin.api_key,
            "owner": owner.api_key,
            "outsider": outsider.api_key,
            "foreign_admin": foreign_admin.api_key,
            "no_key": None,
            "unknown_key": f"unknown-{uuid.uuid4().hex}",
        },
        ids={
            "account_id": owner.account_id,
            "user_id": owner.user_id,
            "domain_id": sub["id"],
            "vm_id": vm_id,
            "sid": owner_ids["vm snapshot"],
            "volume_id": owner_ids["data volume"],
            "snapshot_id": owner_ids["snapshot"],
            "policy_id": owner_ids["policy"],
            "job_id": owner_ids["deploy job"],
            "resource_type": "user_vm",
            "host_id": str(zone.host_ids[0]),
            "cluster_id": str(zone.cluster_ids[0]),
            "fault_id": str(fault.json()["fault_id"]),
            "projection": projection,
            "alert_id": alert_id,
        },
        items={
            "zones": str(zone.zone_id),
            "networks": str(zone.network_id),
            "service-offerings": str(zone.small_offering_id),
            "disk-offerings": str(zone.disk_offering_id),
            # The owner's private template (made from its snapshot).
            "templates": owner_ids["template"],
            "pods": str(zone.pod_id),
            "clusters": str(zone.cluster_ids[0]),
            "storage-pools": str(zone.pool_ids[0]),
            "secondary-storage": str(zone.secondary_storage_id),
        },
        owner_ids=owner_ids,
        throwaway={
            "admin": Throwaway(spare_a.account_id, spare_a.user_id, spare_domain_a["id"]),
            "domain_admin": Throwaway(spare_d.account_id, spare_d.user_id, spare_domain_d["id"]),
        },
        root_volume_id=root_volume_id,
        usage_start=(now - timedelta(days=1)).isoformat(),
        usage_end=(now + timedelta(days=1)).isoformat(),
        seed_key=seed_key,
        seed_volumes=seed_volumes,
        domains={"P": parent["id"], "P/D": sub["id"], "Q": other["id"]},
        colleague_id=str(colleague.json()["user"]["id"]),
        tenants={
            "domain_admin": domain_admin,
            "owner": owner,
            "outsider": outsider,
            "foreign_admin": foreign_admin,
        },
    )


# -- the tests -----------------------------------------------------------------------------------
def request_models() -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for module in (models, tenancy_models, projection_admin):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, BaseModel):
                found[name] = value
    return found


async def test_the_table_covers_every_operation_of_the_document(
    document: dict[str, Any], world: World
) -> None:
    operations = {op.key: op for op in operations_of(document)}
    missing = sorted(f"{m} {p}" for m, p in operations.keys() - TABLE.keys())
    stale = sorted(f"{m} {p}" for m, p in TABLE.keys() - operations.keys())
    assert not (missing or stale), (
        f"operations without a row in TABLE (add one per endpoint): {missing}; "
        f"rows of TABLE no operation has any more: {stale}"
    )
    for key, row in TABLE.items():
        assert row == OPEN or (len(row) == len(ROLES) and set(row) <= set(OUTCOMES)), (
            f"{key}: {row!r} is not one outcome per role {ROLES}"
        )
    # Another tenant is never allowed on what a path names of the owner's.
    owners = {"account_id", "user_id", "domain_id", "vm_id", "sid", "volume_id"}
    owners |= {"snapshot_id", "policy_id", "job_id"}
    for op in operations.values():
        row = TABLE[op.key]
        if owners & set(op.path_parameters) and row != OPEN:
            for role in ("outsider", "foreign_admin"):
                assert expected(row, role) != ALLOWED, f"{op}: {role} allowed on the owner's"
    # Every action has its targets; every body-taking operation a valid body.
    lacking = sorted(
        str(op) for op in operations.values() if op.kind == "action" and op.key not in ACTIONS
    )
    assert not lacking, (
        f"operations with neither a job nor a body need an entry in ACTIONS (how to run them "
        f"for real without breaking the other checks): {lacking}"
    )
    known = request_models()
    for op in operations.values():
        if op.body_schema is not None and op.kind != "job":
            # A job's body is checked by its probe: the 422 names the header alone.
            known[op.body_schema].model_validate(valid_body(op, world))


async def test_authorization_is_settled_before_parameters_are_validated(world: World) -> None:
    """The premise of the probes: FastAPI runs the authorization dependencies before it
    validates the parameters and the body, so a 422 means authorization passed."""
    async with world.http("domain_admin") as http:
        refused = await http.post(
            "/v1/hosts",
            json={"cluster_id": "not-a-uuid"},
            headers={"Idempotency-Key": OVERLONG_KEY},
        )
        assert refused.status_code == 403, refused.text
    async with world.http("owner") as http:
        refused = await http.post("/v1/accounts", json=UNACCEPTABLE_BODY)
        assert refused.status_code == 403, refused.text
    async with world.http("admin") as http:
        probed = await http.post(
            "/v1/hosts",
            json={"cluster_id": str(world.stack.zone.cluster_ids[0]), "name": "h", "address": "h"},
            headers={"Idempotency-Key": OVERLONG_KEY},
        )
        assert probed.status_code == 422, probed.text
        assert error_locations(probed) == [["header", "Idempotency-Key"]], probed.text


@pytest.mark.parametrize("role", [*ROLES, *NOBODY])
async def test_every_operation_answers_each_role_as_the_table_says(
    role: str, world: World, document: dict[str, Any]
) -> None:
    operations = [op for op in operations_of(document) if op.key in TABLE]
    checks: list[Callable[[], Awaitable[str | None]]] = []
    actions: list[Operation] = []
    async with world.http(role) as http:
        for op in operations:
            outcome = expected(TABLE[op.key], role)
            if outcome in (FORBIDDEN, HIDDEN, "unauthorized"):

                async def denial(c: Call = valid_call(op, world), o: str = outcome) -> str | None:
                    return await check_denial(c, role, o, http, world)

                checks.append(denial)
            elif op.kind == "action":
                actions.append(op)
            else:
                for each in allowances(op, world, role):

                    async def allowance(a: Allowance = each) -> str | None:
                        return a.failure(role, await a.call.send(http))

                    checks.append(allowance)
        failures = await bounded(checks)
    # The actions, for real, one at a time in their order (the owner's key may change).
    for op in sorted(actions, key=lambda op: (ACTIONS[op.key].order, str(op))):
        found = action_allowance(op, world, role)
        if isinstance(found, str):
            failures.append(found)
            continue
        async with world.http(role) as http:
            response = await found.call.send(http)
        failure = found.failure(role, response)
        after = ACTIONS[op.key].after
        if failure is None and after is not None:
            after(world, role, response)
        if failure is not None:
            failures.append(failure)
    assert not failures, f"{len(failures)} answers differ from the table:\n" + "\n".join(failures)


@dataclass(frozen=True)
class ListingCheck:
    path: str
    #: The owner's resource the listing shows to whoever may see it.
    shows: str
    #: The filter narrowing it to the owner (the root admin sees the whole cloud).
    narrowed: dict[str, str]
    #: Filters naming the owner's things (parameter, owned): for another tenant, each narrows
    #: to nothing.
    naming: tuple[tuple[str, str], ...] = ()
    usage: bool = False


LISTINGS = (
    ListingCheck("/v1/virtual-machines", "vm", {"account_id": "account"}),
    ListingCheck("/v1/volumes", "data volume", {"account_id": "account"}, (("vm_id", "vm"),)),
    ListingCheck(
        "/v1/snapshots",
        "snapshot",
        {"account_id": "account"},
        (("volume_id", "root volume"), ("policy_id", "policy")),
    ),
    ListingCheck("/v1/jobs", "deploy job", {"account_id": "account"}, (("resource_id", "vm"),)),
    ListingCheck(
        "/v1/events",
        "vm",
        {"account_id": "account"},
        (("domain_id", "domain"), ("resource_id", "vm"), ("job_id", "deploy job")),
    ),
    ListingCheck(
        "/v1/usage-records", "vm", {"account": "account"}, (("domain", "domain"),), usage=True
    ),
    ListingCheck(
        "/v1/snapshot-policies",
        "policy",
        {"account_id": "account"},
        (("volume_id", "root volume"),),
    ),
    ListingCheck("/v1/accounts", "account", {"domain_id": "domain"}, (("domain_id", "domain"),)),
    ListingCheck("/v1/domains", "domain", {}),
    ListingCheck("/v1/templates", "template", {}),
)


async def every_page(
    http: httpx.AsyncClient, listing: ListingCheck, world: World, filters: dict[str, str]
) -> str:
    """Every page of the listing, as one text."""
    params = {"limit": "500", "consistent": "true", **filters}
    if listing.usage:
        params |= {"start": world.usage_start, "end": world.usage_end}
    pages: list[str] = []
    for _ in range(100):
        response = await http.get(listing.path, params=params)
        assert response.status_code == 200, f"GET {listing.path} {params}: {response.text}"
        assert response.headers.get("Stratus-Read-Consistent", "true") == "true", listing.path
        pages.append(response.text)
        cursor = response.json().get("next_cursor")
        if not cursor:
            return "\n".join(pages)
        params["cursor"] = cursor
    raise AssertionError(f"GET {listing.path}: more than 100 pages")


async def test_listings_leave_no_trace_of_another_tenant(world: World) -> None:
    failures: list[str] = []
    owned = world.owner_ids

    async def strangers(role: str, listing: ListingCheck) -> None:
        async with world.http(role) as http:
            views = {"": await every_page(http, listing, world, {})}
            for parameter, name in listing.naming:
                naming = {parameter: owned[name]}
                views[f" {naming}"] = await every_page(http, listing, world, naming)
        for shown, text in views.items():
            seen = sorted(name for name, value in owned.items() if value in text)
            if seen:
                failures.append(f"GET {listing.path}{shown} as {role} shows the owner's {seen}")

    async def insiders(role: str, listing: ListingCheck) -> None:
        narrowed = (
            {name: owned[value] for name, value in listing.narrowed.items()}
            if role == "admin"
            else {}
        )
        async with world.http(role) as http:
            text = await every_page(http, listing, world, narrowed)
        if owned[listing.shows] not in text:
            failures.append(
                f"GET {listing.path} {narrowed} as {role} does not show the owner's "
                f"{listing.shows} {owned[listing.shows]}"
            )

    await asyncio.gather(
        *(
            strangers(role, listing)
            for role in ("outsider", "foreign_admin")
            for listing in LISTINGS
        ),
        *(
            insiders(role, listing)
            for role in ("admin", "domain_admin", "owner")
            for listing in LISTINGS
        ),
    )
    assert not failures, "\n".join(failures)


def scoped_filters(world: World) -> Iterator[tuple[str, dict[str, str]]]:
    """The listings' filters naming the owner's account."""
    owner = world.owner_ids["account"]
    for path in (
        "/v1/virtual-machines",
        "/v1/volumes",
        "/v1/snapshots",
        "/v1/jobs",
        "/v1/events",
        "/v1/snapshot-policies",
    ):
        yield path, {"account_id": owner}
    period = {"start": world.usage_start, "end": world.usage_end}
    for path in (
        "/v1/usage-records",
        "/v1/usage-records/export",
        "/v1/usage-records/summary",
        "/v1/usage-corrections",
    ):
        yield path, {"account": owner, **period}


async def test_filters_naming_another_account_or_a_host_are_refused(world: World) -> None:
    failures: list[str] = []

    async def ask(role: str, path: str, params: dict[str, str], wanted: int) -> None:
        async with world.http(role) as http:
            response = await http.get(path, params=params)
        ok = response.status_code == wanted if wanted != 200 else response.is_success
        if not ok:
            failures.append(
                f"GET {path} {params} as {role}: got {response.status_code}, expected {wanted} "
                f"{response.text[:200]}"
            )

    asks = []
    for path, params in scoped_filters(world):
        asks += [ask(role, path, params, 403) for role in ("outsider", "foreign_admin")]
        asks += [ask(role, path, params, 200) for role in ("admin", "domain_admin", "owner")]
    host = {"host_id": str(world.stack.zone.host_ids[0])}
    asks += [ask(r, "/v1/virtual-machines", host, 403) for r in ROLES if r != "admin"]
    asks.append(ask("admin", "/v1/virtual-machines", host, 200))
    await asyncio.gather(*asks)
    # Deploying for another tenant's account is refused before anything is submitted.
    for role in ("outsider", "foreign_admin"):
        async with world.http(role) as http:
            refused = await http.post(
                "/v1/virtual-machines",
                json=deploy_order(world.stack, account_id=world.owner_ids["account"]),
            )
        if refused.status_code != 403:
            failures.append(
                f"POST /v1/virtual-machines for the owner's account as {role}: got "
                f"{refused.status_code}, expected 403 {refused.text[:200]}"
            )
    assert not failures, "\n".join(failures)


async def test_a_body_naming_another_tenants_resource_answers_as_a_missing_one(
    world: World,
) -> None:
    """What a body names of another tenant's (a private template, a VM) is answered exactly as
    something that does not exist: no name, no hint that it does."""
    owned = world.owner_ids
    failures: list[str] = []
    for role in ("outsider", "foreign_admin"):
        asks = [
            (
                "POST",
                "/v1/virtual-machines",
                deploy_order(world.stack, template_id=owned["template"]),
            ),
            (
                "POST",
                f"/v1/volumes/{world.seed_volumes[role]}/attach",
                {"vm_id": owned["vm"]},
            ),
        ]
        async with world.http(role) as http:
            for method, url, body in asks:
                fresh = {value: str(uuid.uuid4()) for value in owned.values()}
                answer = await http.request(method, url, json=body)
                missing = await http.request(
                    method, url, json=json.loads(swapped(json.dumps(body), fresh))
                )
                as_missing = swapped(missing.text, {new: old for old, new in fresh.items()})
                if answer.is_success or (answer.status_code, answer.text) != (
                    missing.status_code,
                    as_missing,
                ):
                    failures.append(
                        f"{method} {url} {body} as {role}: got {answer.status_code} "
                        f"{answer.text[:300]}, expected the answer about a missing one: "
                        f"{missing.status_code} {as_missing[:300]}"
                    )
    assert not failures, "\n".join(failures)


async def test_admins_act_below_themselves_and_users_on_their_own_keys_only(world: World) -> None:
    """The rules the table cannot show with the owner's resources: a domain admin acts on its
    subtree but not on its own account, user or domain, creates no root admin, and reaches no
    other domain; a user registers its own keys only and sees its own domain only. (Last in the
    module: a refusal that failed would change the domain admin's standing.)"""
    boss, owner = world.tenants["domain_admin"], world.tenants["owner"]
    domains = world.domains
    root_admin = str(world.stack.zone.admin_account_id)
    name = f"authz-{uuid.uuid4().hex[:8]}"
    cases: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
        ("domain_admin", "POST", f"/v1/accounts/{boss.account_id}/disable", None, 403),
        ("domain_admin", "POST", f"/v1/users/{boss.user_id}/disable", None, 403),
        (
            "domain_admin",
            "PUT",
            f"/v1/accounts/{boss.account_id}/limits/user_vm",
            {"max": -1},
            403,
        ),
        ("domain_admin", "PUT", f"/v1/domains/{domains['P']}/limits/user_vm", {"max": -1}, 403),
        ("domain_admin", "DELETE", f"/v1/domains/{domains['P']}", None, 403),
        (
            "domain_admin",
            "POST",
            "/v1/accounts",
            {"name": name, "account_type": "Admin", "domain_id": domains["P/D"]},
            403,
        ),
        ("domain_admin", "POST", "/v1/accounts", {"name": name, "domain_id": domains["Q"]}, 404),
        ("domain_admin", "POST", "/v1/domains", {"name": name, "parent_id": domains["Q"]}, 404),
        ("domain_admin", "GET", f"/v1/domains/{domains['Q']}", None, 404),
        ("domain_admin", "GET", f"/v1/domains/{ROOT_DOMAIN_ID}", None, 404),
        ("domain_admin", "GET", f"/v1/accounts/{root_admin}", None, 404),
        ("domain_admin", "POST", f"/v1/accounts/{root_admin}/disable", None, 404),
        # Its own domain is its to fill.
        ("domain_admin", "POST", "/v1/accounts", {"name": f"{name}-p"}, 201),
        ("owner", "GET", f"/v1/domains/{domains['P']}", None, 404),
        ("owner", "GET", f"/v1/users/{world.colleague_id}", None, 200),
        ("owner", "POST", f"/v1/users/{world.colleague_id}/keys", None, 403),
        ("owner", "POST", f"/v1/users/{owner.user_id}/disable", None, 403),
    ]
    failures = []
    for role, method, url, body, wanted in cases:
        async with world.http(role) as http:
            response = await http.request(method, url, json=body)
        if response.status_code != wanted:
            failures.append(
                f"{method} {url} {body or ''} as {role}: got {response.status_code}, expected "
                f"{wanted} {response.text[:300]}"
            )
    assert not failures, "\n".join(failures)
