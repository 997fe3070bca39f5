"""The API and its OpenAPI document agree, as Schemathesis checks them: over every `/v1`
operation, with bounded examples, no 500, no response outside its schema, no status the document
does not declare, a correct `Allow` on 405, malformed data refused and well-formed data never
refused as malformed.

A well-formed request may still name something that does not exist or cannot be done now (a
random offering id, a stopped VM): the domain refuses that with a 4xx and errorcode 431 (or its
own code), which no schema can foresee. Only a refusal as *malformed* (errorcode 430, what the
document could have said) breaks the agreement, so that is what the positive-data check here
looks for, instead of Schemathesis's own, which counts every 422 as one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import schemathesis
from hypothesis import strategies as st
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure
from schemathesis.engine import Status
from schemathesis.engine.events import FatalError, NonFatalError, ScenarioFinished

from api.credentials import KeyPair
from domain.account import AccountState, api_key_digest
from domain.cluster import Cluster
from domain.host import Host, ResourceState
from domain.locations import ADDRESS_FORMAT, PATH_FORMAT, URI_FORMAT
from domain.tenancy import first_user_id, register_user_keys, set_account_state, set_user_state
from domain.user import UserState
from domain.zone import AllocationState
from tests.e2e.conftest import Stack
from tests.e2e.tenants import new_tenant
from tests.support import ADMIN_KEY, ADMIN_SECRET, seed_zone, wait_until
from workers.demo_cloud import DemoCloud

#: Examples per operation and phase: the whole run stays within about two minutes here.
MAX_EXAMPLES = 6
MALFORMED = 430


class RefusedAsMalformed(Failure):
    kind_title = "Well-formed data refused as malformed"

    def __init__(self, operation: str, status: int, body: str) -> None:
        super().__init__(
            operation=operation,
            message=f"The document allows this request, but the API answered {status} "
            f"errorcode {MALFORMED}: {body[:300]}",
        )


@schemathesis.check
def well_formed_data_is_never_refused_as_malformed(ctx: Any, response: Any, case: Any) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return
    try:
        errorcode = json.loads(response.content).get("errorcode")
    except ValueError:
        errorcode = None
    if errorcode == MALFORMED:
        raise RefusedAsMalformed(case.operation.label, response.status_code, response.text)


# What no pattern can say (no credentials in a location): values that are well formed.
schemathesis.openapi.format(
    ADDRESS_FORMAT,
    st.sampled_from(["10.0.0.77", "kvm-1.example.com", "[fe80::1]:16509", "bmc-7:623"]),
)
schemathesis.openapi.format(
    URI_FORMAT, st.sampled_from(["qemu+tls://{address}/system", "qemu:///system"])
)
schemathesis.openapi.format(
    PATH_FORMAT, st.sampled_from(["/var/lib/stratus/primary", "nfs://filer/export", "ds1"])
)


#: Operations the fuzzer must not run: enabling a host's BMC would let its next power action
#: send IPMI to whatever address it made up (tests send traffic to loopback only), and HA
#: switched on starts a monitor that would watch the fuzzer's hosts for the rest of the run.
#: Their contracts are proven by tests/e2e/test_out_of_band_api.py (against a BMC on
#: loopback) and tests/e2e/test_host_ha_api.py.
NOT_FUZZED = r"(/out-of-band-management/enable|/ha/enable)$"
HOST_AND_CLUSTER_ACTIONS = r"^/v1/(hosts/\{host_id\}|clusters/\{cluster_id\})/"


def conformance_failures(url: str, key: str, zone: DemoCloud) -> list[str]:
    """Hosts and clusters in paths are the fuzzer's own zone's: maintenance, allocation state
    and out-of-band settings act on real infrastructure, and other tests' hosts must not go
    into maintenance under them."""
    config = SchemathesisConfig.from_dict(
        {
            "headers": {"X-API-Key": key},
            "seed": 20260101,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {"positive_data_acceptance": {"enabled": False}},
            "parameters": {
                "path.host_id": str(zone.host_ids[0]),
                "path.cluster_id": str(zone.cluster_ids[0]),
            },
            # Operations on one host or cluster run a real job per request, and their paths
            # are pinned: their boundary-value phase would run dozens of jobs to learn nothing
            # the fuzzing phase and their own tests do not show.
            "operations": [
                {
                    "include-path-regex": HOST_AND_CLUSTER_ACTIONS,
                    "phases": {"coverage": {"enabled": False}},
                }
            ],
        }
    )
    whole = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    schema = whole.include(path_regex="^/v1/").exclude(path_regex=NOT_FUZZED)
    failures: list[str] = []
    for event in engine.from_schema(schema).execute():
        if isinstance(event, ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{event.recorder.label}: {check.name}: {failure.title}: "
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, NonFatalError):
            failures.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, FatalError):
            failures.append(f"fatal: {event.exception!r}")
    return sorted(set(failures))


async def test_the_api_answers_every_operation_as_its_openapi_document_says(
    stack: Stack,
) -> None:
    """Run as a root admin of its own: Schemathesis reuses ids it read in earlier answers, so
    it may disable accounts or rotate keys, its own included (then it goes on with 401s, which
    every operation declares); the stack's admin is put back as it was afterwards."""
    async with stack.http() as http:
        before = {f["fault_id"] for f in (await http.get("/v1/simulator/faults")).json()["data"]}
        fuzzer = await new_tenant(http, account_type="Admin")
    own_zone = seed_zone(stack.cloud)
    try:
        failures = await asyncio.to_thread(
            conformance_failures, stack.url, fuzzer.api_key, own_zone
        )
    finally:
        await asyncio.to_thread(restore_the_stack_admin, stack)
        async with stack.http() as http:
            await wait_until(
                lambda: http.get("/v1/zones"),
                lambda response: response.status_code == 200,
                timeout=30,
                what="the stack's admin key to work again",
            )
        await _remove_faults_added_since(stack, before)
    # The fuzzer acted on its own zone's infrastructure only: the stack's is as it was.
    for host_id in stack.zone.host_ids:
        host = stack.cloud.load(Host, host_id)
        assert host.resource_state is ResourceState.ENABLED, host.name
        assert host.oobm_address is None, host.name
    for cluster_id in stack.zone.cluster_ids:
        cluster = stack.cloud.load(Cluster, cluster_id)
        assert cluster.allocation_state is AllocationState.ENABLED, cluster.name
    assert not failures, f"{len(failures)} disagreements:\n\n" + "\n\n".join(failures)


def restore_the_stack_admin(stack: Stack) -> None:
    """The stack's admin enabled, with its own keys, whatever the fuzzing did to it."""
    admin_id = stack.zone.admin_account_id
    set_account_state(stack.cloud, admin_id, AccountState.ENABLED)
    set_user_state(stack.cloud, first_user_id(admin_id), UserState.ENABLED)
    register_user_keys(stack.cloud, first_user_id(admin_id), api_key_digest(ADMIN_KEY))
    assert stack.credentials is not None
    stack.credentials.keep(first_user_id(admin_id), KeyPair(ADMIN_KEY, ADMIN_SECRET))


async def _remove_faults_added_since(stack: Stack, before: set[str]) -> None:
    """Schemathesis may add a well-formed simulator fault; the stack's later tests must not
    meet it."""
    async with stack.http() as http:
        faults = (await http.get("/v1/simulator/faults")).json()["data"]
        for fault in faults:
            if fault["fault_id"] not in before:
                removed = await http.delete(f"/v1/simulator/faults/{fault['fault_id']}")
                assert removed.status_code in (204, 404), removed.text
        assert isinstance(http, httpx.AsyncClient)
