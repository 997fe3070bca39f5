"""Deploying through the HTTP API, as a user with curl would."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode

from api.auth import Caller
from api.job_submission import job_id_for
from domain.account import AccountType
from domain.catalog import GIB
from domain.inventory import add_account, register_template
from tests.e2e.conftest import Stack, wait_for_job
from tests.e2e.tenants import key_works
from tests.support import wait_until


def order(stack: Stack, **overrides: Any) -> dict[str, Any]:
    body = {
        "zone_id": str(stack.zone.zone_id),
        "service_offering_id": str(stack.zone.small_offering_id),
        "template_id": str(stack.zone.template_id),
    }
    body.update(overrides)
    return body


async def test_deploy_answers_202_and_the_vm_is_listed_running_with_ip_and_root_volume(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        response = await http.post("/v1/virtual-machines", json=order(stack, name="web-1"))
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert response.headers["Location"] == f"/v1/jobs/{accepted['job_id']}"
        assert accepted["temporal_url"].endswith(f"/workflows/{accepted['job_id']}")

        job = await wait_for_job(http, accepted["job_id"])
        assert job["status"] == "succeeded" and job["jobstatus"] == 1, job
        assert job["resource_id"] == accepted["virtual_machine_id"]
        assert job["step"] == "completed" and job["completed"] is not None

        listed = await http.get(
            "/v1/virtual-machines",
            params={"zone_id": str(stack.zone.zone_id), "consistent": "true"},
        )
        assert listed.headers["Stratus-Read-Consistent"] == "true"
        listing = listed.json()
        vm = next(v for v in listing["data"] if v["id"] == accepted["virtual_machine_id"])
        assert vm["state"] == "Running" and vm["name"] == "web-1"
        assert vm["host_id"] in {str(h) for h in stack.zone.host_ids}
        assert vm["ip_address"] == job["result"]["ip_address"]

        volume = (
            await http.get(f"/v1/volumes/{vm['root_volume_id']}", params={"consistent": "true"})
        ).json()
        assert volume["state"] == "Ready" and volume["vm_id"] == vm["id"]
        assert volume["volume_type"] == "ROOT"


async def test_the_job_is_queued_not_missing_right_after_the_202(stack: Stack) -> None:
    async with stack.http() as http:
        accepted = (await http.post("/v1/virtual-machines", json=order(stack))).json()
        response = await http.get(f"/v1/jobs/{accepted['job_id']}")
        assert response.status_code == 200
        assert response.json()["status"] in {"queued", "running", "succeeded"}
        await wait_for_job(http, accepted["job_id"])


async def test_a_repeated_idempotency_key_returns_the_same_job(stack: Stack) -> None:
    key = f"deploy-{uuid.uuid4()}"
    body = order(stack, name="idem")
    async with stack.http() as http:
        first = await http.post("/v1/virtual-machines", json=body, headers={"Idempotency-Key": key})
        second = await http.post(
            "/v1/virtual-machines", json=body, headers={"Idempotency-Key": key}
        )
        assert first.status_code == second.status_code == 202
        assert first.json()["job_id"] == second.json()["job_id"]
        await wait_for_job(http, first.json()["job_id"])
        # Also once the job has ended.
        third = await http.post("/v1/virtual-machines", json=body, headers={"Idempotency-Key": key})
        assert third.status_code == 202 and third.json()["job_id"] == first.json()["job_id"]
        vms = (
            await http.get(
                "/v1/virtual-machines", params={"consistent": "true", "zone_id": body["zone_id"]}
            )
        ).json()
        assert sum(1 for v in vms["data"] if v["name"] == "idem") == 1


async def test_an_idempotency_key_reused_for_a_different_request_is_refused_409(
    stack: Stack,
) -> None:
    key = f"deploy-{uuid.uuid4()}"
    async with stack.http() as http:
        first = await http.post(
            "/v1/virtual-machines", json=order(stack, name="one"), headers={"Idempotency-Key": key}
        )
        other = await http.post(
            "/v1/virtual-machines", json=order(stack, name="two"), headers={"Idempotency-Key": key}
        )
        assert other.status_code == 409
        assert other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        await wait_for_job(http, first.json()["job_id"])


async def test_a_simulator_fault_set_through_the_api_sends_the_vm_to_another_host(
    stack: Stack,
) -> None:
    broken = str(stack.zone.host_ids[0])
    async with stack.http() as http:
        fault = await http.post(
            "/v1/simulator/faults",
            json={
                "operation": "start_vm",
                "action": "fail",
                "host_id": broken,
                "message": "simulated: hypervisor refused",
            },
        )
        assert fault.status_code == 201, fault.text
        try:
            accepted = (
                await http.post("/v1/virtual-machines", json=order(stack, name="dodge"))
            ).json()
            job = await wait_for_job(http, accepted["job_id"])
            assert job["status"] == "succeeded"
            vm = (
                await http.get(
                    f"/v1/virtual-machines/{accepted['virtual_machine_id']}",
                    params={"consistent": "true"},
                )
            ).json()
            assert vm["host_id"] != broken or vm["last_host_id"] != broken
        finally:
            removed = await http.delete(f"/v1/simulator/faults/{fault.json()['fault_id']}")
            assert removed.status_code == 204
        listed = (await http.get("/v1/simulator/faults")).json()
        assert all(f["fault_id"] != fault.json()["fault_id"] for f in listed["data"])


async def test_a_job_that_fails_reports_a_cloudstack_code_and_reason(stack: Stack) -> None:
    async with stack.http() as http:
        fault = (
            await http.post(
                "/v1/simulator/faults",
                json={
                    "operation": "create_volume",
                    "action": "fail",
                    "error_code": 530,
                    "message": "simulated: storage backend crashed",
                },
            )
        ).json()
        try:
            accepted = (
                await http.post("/v1/virtual-machines", json=order(stack, name="sad"))
            ).json()
            job = await wait_for_job(http, accepted["job_id"])
        finally:
            await http.delete(f"/v1/simulator/faults/{fault['fault_id']}")
        assert job["status"] == "failed" and job["jobstatus"] == 2
        assert job["error_code"] == 530
        assert "storage backend crashed" in job["error_text"]
        vm = (
            await http.get(
                f"/v1/virtual-machines/{accepted['virtual_machine_id']}",
                params={"consistent": "true"},
            )
        ).json()
        assert vm["state"] == "Error"


async def test_listings_page_by_cursor_and_by_page_number(stack: Stack) -> None:
    async with stack.http() as http:
        accepted = [
            (await http.post("/v1/virtual-machines", json=order(stack, name=f"page-{n}"))).json()
            for n in range(3)
        ]
        await asyncio.gather(*(wait_for_job(http, a["job_id"]) for a in accepted))
        params: dict[str, str | int] = {
            "zone_id": str(stack.zone.zone_id),
            "consistent": "true",
            "limit": 2,
        }
        first = (await http.get("/v1/virtual-machines", params=params)).json()
        assert len(first["data"]) == 2 and first["count"] >= 3 and first["next_cursor"]
        second = (
            await http.get(
                "/v1/virtual-machines", params={**params, "cursor": first["next_cursor"]}
            )
        ).json()
        ids_first = {v["id"] for v in first["data"]}
        assert not ids_first & {v["id"] for v in second["data"]}
        by_page = (await http.get("/v1/virtual-machines", params={**params, "page": 2})).json()
        assert [v["id"] for v in by_page["data"]] == [v["id"] for v in second["data"]]
        running = (
            await http.get(
                "/v1/virtual-machines", params={**params, "limit": 500, "state": "Running"}
            )
        ).json()
        assert all(v["state"] == "Running" for v in running["data"])


async def test_jobs_are_found_in_temporal_by_job_type_and_account(
    stack: Stack, temporal_client: Any
) -> None:
    async with stack.http() as http:
        accepted = (await http.post("/v1/virtual-machines", json=order(stack))).json()
        await wait_for_job(http, accepted["job_id"])
    query = (
        f"JobType = 'DeployVirtualMachine' AND AccountId = '{stack.zone.admin_account_id}' "
        f"AND ResourceId = '{accepted['virtual_machine_id']}'"
    )

    async def found() -> list[str]:  # visibility is eventually consistent
        return [w.id async for w in temporal_client.list_workflows(query)]

    assert await wait_until(found, interval=0.2, what="the job in visibility") == [
        accepted["job_id"]
    ]


async def test_a_user_sees_only_their_own_vms_and_jobs(stack: Stack) -> None:
    user_key = f"user-{uuid.uuid4()}"
    user = add_account(stack.cloud, uuid.uuid4(), f"user-{uuid.uuid4().hex[:6]}", "User", user_key)
    await key_works(stack, user_key)
    async with stack.http() as admin, stack.http(user_key) as http:
        mine = (await http.post("/v1/virtual-machines", json=order(stack, name="mine"))).json()
        theirs = (await admin.post("/v1/virtual-machines", json=order(stack, name="theirs"))).json()
        await wait_for_job(http, mine["job_id"])
        await wait_for_job(admin, theirs["job_id"])
        listing = (await http.get("/v1/virtual-machines", params={"consistent": "true"})).json()
        assert {v["account_id"] for v in listing["data"]} == {str(user.id)}
        assert (
            await http.get(f"/v1/virtual-machines/{theirs['virtual_machine_id']}")
        ).status_code == 404
        assert (await http.get(f"/v1/jobs/{theirs['job_id']}")).status_code == 404
        assert (await http.get("/v1/hosts")).status_code == 403
        assert (
            await http.post(
                "/v1/simulator/faults", json={"operation": "start_vm", "action": "fail"}
            )
        ).status_code == 403


async def test_a_template_of_another_hypervisor_is_refused_before_any_job_starts(
    stack: Stack, temporal_client: Any
) -> None:
    kvm_template = register_template(
        stack.cloud,
        uuid.uuid4(),
        "kvm-only",
        display_text="KVM image",
        hypervisor="KVM",
        format="QCOW2",
        os_type="Linux",
        url="http://images.invalid/kvm.qcow2",
        size_bytes=GIB,
    )
    async with stack.http() as http:
        response = await http.post(
            "/v1/virtual-machines",
            json=order(stack, template_id=str(kvm_template.id)),
            headers={"Idempotency-Key": "kvm-on-simulator"},
        )
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "template_id"] and "KVM" in detail["msg"]
    assert response.json()["errorcode"] == 431
    caller = Caller(
        account_id=stack.zone.admin_account_id, name="test-admin", role=AccountType.ADMIN
    )
    would_be_job = job_id_for(caller, "kvm-on-simulator")
    with pytest.raises(RPCError) as missing:
        await temporal_client.get_workflow_handle(str(would_be_job)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
