"""Domains, accounts, users and keys over `/v1`: who sees and does what, keys that rotate and
stop working when disabled, and limits refused with 532 at submission."""

from __future__ import annotations

from tests.e2e.conftest import Stack, deploy_order, wait_for_job
from tests.e2e.tenants import new_domain, new_tenant


async def test_a_domain_admin_sees_its_subtree_and_nothing_of_other_tenants(
    stack: Stack,
) -> None:
    async with stack.http() as admin:
        sales = await new_domain(admin)
        emea = await new_domain(admin, sales["id"])
        assert emea["path"] == f"{sales['path']}/{emea['name']}"
        boss = await new_tenant(admin, account_type="DomainAdmin", domain_id=sales["id"])
        outsider = await new_tenant(admin)
    async with boss.http(stack) as http:
        # The domain admin makes a user below its domain, with keys of its own.
        member = await new_tenant(http, domain_id=emea["id"])
        domains = (await http.get("/v1/domains")).json()
        assert {d["id"] for d in domains["data"]} == {sales["id"], emea["id"]}
        accounts = (await http.get("/v1/accounts")).json()
        ids = {a["id"] for a in accounts["data"]}
        assert member.account_id in ids and boss.account_id in ids
        assert outsider.account_id not in ids
        for path in (f"/v1/accounts/{outsider.account_id}", f"/v1/users/{outsider.user_id}"):
            response = await http.get(path)
            assert response.status_code == 404 and outsider.name not in response.text
        # Infrastructure is the root admin's.
        assert (await http.get("/v1/hosts")).status_code == 403
        assert (await http.get("/v1/clusters")).status_code == 403
        refused = await http.post("/v1/accounts", json={"name": "x-root", "account_type": "Admin"})
        assert refused.status_code == 403
        # Its own domain is not its to delete, nor ROOT's to reach.
        assert (await http.delete(f"/v1/domains/{sales['id']}")).status_code == 403
        root_child = await http.post(
            "/v1/domains", json={"name": "x", "parent_id": str(await admin_root_id(stack))}
        )
        assert root_child.status_code == 404

    async with member.http(stack) as http:
        deployed = await http.post(
            "/v1/virtual-machines", json=deploy_order(stack, name="member-vm")
        )
        assert deployed.status_code == 202, deployed.text
        job = await wait_for_job(http, deployed.json()["job_id"])
        assert job["jobstatus"] == 1, job
        vm_id = deployed.json()["virtual_machine_id"]
    async with boss.http(stack) as http:
        listed = await http.get("/v1/virtual-machines", params={"consistent": "true"})
        assert vm_id in {vm["id"] for vm in listed.json()["data"]}
    async with outsider.http(stack) as http:
        listed = await http.get("/v1/virtual-machines", params={"consistent": "true"})
        assert vm_id not in {vm["id"] for vm in listed.json()["data"]}
        for response in (
            await http.get(f"/v1/virtual-machines/{vm_id}"),
            await http.post(f"/v1/virtual-machines/{vm_id}/stop", json={}),
            await http.get(f"/v1/jobs/{deployed.json()['job_id']}"),
        ):
            assert response.status_code == 404, response.text
            assert "member-vm" not in response.text
        assert (
            await http.get("/v1/virtual-machines", params={"account_id": member.account_id})
        ).status_code == 403


async def admin_root_id(stack: Stack) -> str:
    async with stack.http() as admin:
        domains = (await admin.get("/v1/domains")).json()["data"]
    return next(d["id"] for d in domains if d["path"] == "ROOT")


async def test_registering_new_keys_retires_the_old_ones_at_once(stack: Stack) -> None:
    async with stack.http() as admin:
        tenant = await new_tenant(admin)
    async with tenant.http(stack) as http:
        assert (await http.get("/v1/virtual-machines")).status_code == 200
        rotated = await http.post(f"/v1/users/{tenant.user_id}/keys")
        assert rotated.status_code == 201, rotated.text
        new_key = rotated.json()["api_key"]
        assert new_key != tenant.api_key and rotated.json()["secret_key"] != tenant.secret_key
        assert (await http.get("/v1/virtual-machines")).status_code == 401
    async with stack.http(new_key) as http:
        assert (await http.get("/v1/virtual-machines")).status_code == 200
        user = (await http.get(f"/v1/users/{tenant.user_id}")).json()
        assert user["keys_registered"] == 2
        assert "secret" not in str(user) and new_key not in str(user)


async def test_a_disabled_user_or_account_is_refused_until_enabled(stack: Stack) -> None:
    async with stack.http() as admin:
        tenant = await new_tenant(admin)
        async with tenant.http(stack) as http:
            assert (await admin.post(f"/v1/users/{tenant.user_id}/disable")).status_code == 200
            refused = await http.get("/v1/virtual-machines")
            assert refused.status_code == 401 and refused.json()["errorcode"] == 531
            assert (await admin.post(f"/v1/users/{tenant.user_id}/enable")).status_code == 200
            assert (await http.get("/v1/virtual-machines")).status_code == 200
            disabled = await admin.post(f"/v1/accounts/{tenant.account_id}/disable")
            assert disabled.status_code == 200 and disabled.json()["state"] == "disabled"
            assert (await http.get("/v1/virtual-machines")).status_code == 401
            # A disabled tenant cannot lift itself back.
            assert (await http.post(f"/v1/accounts/{tenant.account_id}/enable")).status_code == 401


async def test_a_user_cannot_administer_even_its_own_account(stack: Stack) -> None:
    async with stack.http() as admin:
        tenant = await new_tenant(admin)
    async with tenant.http(stack) as http:
        for response in (
            await http.post(f"/v1/accounts/{tenant.account_id}/disable"),
            await http.put(f"/v1/accounts/{tenant.account_id}/limits/user_vm", json={"max": 99}),
            await http.post("/v1/accounts", json={"name": "mine"}),
            await http.post("/v1/domains", json={"name": "mine"}),
        ):
            assert response.status_code == 403, response.text
        limits = (await http.get(f"/v1/accounts/{tenant.account_id}/limits")).json()
        assert {row["resource_type"] for row in limits} >= {"user_vm", "cpu", "memory"}


async def test_a_deploy_past_the_accounts_vm_limit_is_refused_with_532_naming_it(
    stack: Stack,
) -> None:
    async with stack.http() as admin:
        tenant = await new_tenant(admin)
        limited = await admin.put(
            f"/v1/accounts/{tenant.account_id}/limits/user_vm", json={"max": 1}
        )
        assert limited.status_code == 200, limited.text
    async with tenant.http(stack) as http:
        first = await http.post("/v1/virtual-machines", json=deploy_order(stack))
        assert first.status_code == 202
        assert (await wait_for_job(http, first.json()["job_id"]))["jobstatus"] == 1
        await http.get("/v1/virtual-machines", params={"consistent": "true"})
        second = await http.post("/v1/virtual-machines", json=deploy_order(stack))
        assert second.status_code == 409, second.text
        body = second.json()
        assert body["errorcode"] == 532
        assert "user_vm limit of account" in body["detail"][0]["msg"]
        assert body["detail"][0]["loc"] == ["limits", "user_vm"]
        limits = {
            r["resource_type"]: r
            for r in (await http.get(f"/v1/accounts/{tenant.account_id}/limits")).json()
        }
        assert limits["user_vm"] == {**limits["user_vm"], "max": 1, "used": 1}


async def test_a_domain_limit_caps_every_account_below_it(stack: Stack) -> None:
    async with stack.http() as admin:
        domain = await new_domain(admin)
        tenant = await new_tenant(admin, domain_id=domain["id"])
        capped = await admin.put(f"/v1/domains/{domain['id']}/limits/cpu", json={"max": 0})
        assert capped.status_code == 200, capped.text
    async with tenant.http(stack) as http:
        refused = await http.post("/v1/virtual-machines", json=deploy_order(stack))
        assert refused.status_code == 409 and refused.json()["errorcode"] == 532
        assert f"cpu limit of domain {domain['path']}" in refused.json()["detail"][0]["msg"]


async def test_volume_count_and_primary_storage_limits_refuse_a_new_volume_and_a_resize(
    stack: Stack,
) -> None:
    async with stack.http() as admin:
        tenant = await new_tenant(admin)
        for resource, maximum in (("volume", 1), ("primary_storage", 6)):
            limited = await admin.put(
                f"/v1/accounts/{tenant.account_id}/limits/{resource}", json={"max": maximum}
            )
            assert limited.status_code == 200, limited.text
    volume = {
        "zone_id": str(stack.zone.zone_id),
        "disk_offering_id": str(stack.zone.disk_offering_id),
        "name": "data-1",
    }
    async with tenant.http(stack) as http:
        created = await http.post("/v1/volumes", json=volume)
        assert created.status_code == 202, created.text
        assert (await wait_for_job(http, created.json()["job_id"]))["jobstatus"] == 1
        await http.get("/v1/volumes", params={"consistent": "true"})
        second = await http.post("/v1/volumes", json={**volume, "name": "data-2"})
        assert second.status_code == 409 and second.json()["errorcode"] == 532, second.text
        assert "volume limit of account" in second.json()["detail"][0]["msg"]
        volume_id = created.json()["volume_id"]
        bigger = await http.post(f"/v1/volumes/{volume_id}/resize", json={"size_gib": 7})
        assert bigger.status_code == 409 and bigger.json()["errorcode"] == 532, bigger.text
        assert "primary_storage limit" in bigger.json()["detail"][0]["msg"]
        within = await http.post(f"/v1/volumes/{volume_id}/resize", json={"size_gib": 6})
        assert within.status_code == 202, within.text
        assert (await wait_for_job(http, within.json()["job_id"]))["jobstatus"] == 1
