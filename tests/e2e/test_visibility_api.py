"""Users see only what is theirs: other accounts' private templates stay hidden, and where a
VM runs or a volume lies (hosts, pools, paths) is shown to administrators only, as CloudStack
does; the OpenAPI document declares both views."""

from __future__ import annotations

import uuid

from domain.account import AccountType
from domain.catalog import GIB
from domain.inventory import add_account, register_template
from tests.e2e.conftest import Stack, wait_for_job
from tests.e2e.tenants import key_works


def private_template(stack: Stack, account_id: uuid.UUID) -> uuid.UUID:
    template_id = uuid.uuid4()
    register_template(
        stack.cloud,
        template_id,
        f"private-{template_id.hex[:6]}",
        display_text="from a snapshot",
        hypervisor="Simulator",
        format="QCOW2",
        os_type="Other Linux (64-bit)",
        url="nfs://secondary/template/private.qcow2",
        size_bytes=GIB,
        zone_id=stack.zone.zone_id,
        account_id=account_id,
        public=False,
    )
    return template_id


def user(stack: Stack) -> tuple[uuid.UUID, str]:
    key = f"user-key-{uuid.uuid4()}"
    account = add_account(
        stack.cloud, uuid.uuid4(), f"u-{uuid.uuid4().hex[:6]}", AccountType.USER.value, key
    )
    return account.id, key


async def all_template_ids(http: object, **params: object) -> set[str]:
    found: set[str] = set()
    cursor = None
    while True:
        page = await http.get(  # type: ignore[attr-defined]
            "/v1/templates",
            params={
                "limit": 500,
                "consistent": "true",
                **params,
                **({"cursor": cursor} if cursor else {}),
            },
        )
        assert page.status_code == 200, page.text
        found |= {t["id"] for t in page.json()["data"]}
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return found


async def test_a_user_sees_public_templates_and_their_own_never_anothers_private_ones(
    stack: Stack,
) -> None:
    (alice, alice_key), (bob, bob_key) = user(stack), user(stack)
    await key_works(stack, alice_key)
    await key_works(stack, bob_key)
    alices = str(private_template(stack, alice))
    bobs = str(private_template(stack, bob))
    public = str(stack.zone.template_id)
    async with stack.http(alice_key) as as_alice, stack.http() as as_admin:
        seen_by_alice = await all_template_ids(as_alice)
        assert {public, alices} <= seen_by_alice and bobs not in seen_by_alice
        assert (await as_alice.get(f"/v1/templates/{bobs}")).status_code == 404
        own = await as_alice.get(f"/v1/templates/{alices}")
        assert own.status_code == 200 and own.json()["details"]["account_id"] == str(alice)
        assert {public, alices, bobs} <= await all_template_ids(as_admin)
        count = (await as_alice.get("/v1/templates", params={"limit": 1})).json()["count"]
        assert count == len(seen_by_alice)  # the count is of what the user sees
    async with stack.http(bob_key) as as_bob:
        assert alices not in await all_template_ids(as_bob)


async def test_hosts_pools_and_paths_are_shown_to_administrators_only(stack: Stack) -> None:
    owner, key = user(stack)
    await key_works(stack, key)
    async with stack.http() as as_admin, stack.http(key) as as_user:
        deployed = await as_admin.post(
            "/v1/virtual-machines",
            json={
                "zone_id": str(stack.zone.zone_id),
                "service_offering_id": str(stack.zone.small_offering_id),
                "template_id": str(stack.zone.template_id),
                "account_id": str(owner),
            },
        )
        assert deployed.status_code == 202, deployed.text
        await wait_for_job(as_admin, deployed.json()["job_id"])
        vm_id = deployed.json()["virtual_machine_id"]

        users_vm = (await as_user.get(f"/v1/virtual-machines/{vm_id}")).json()
        admins_vm = (await as_admin.get(f"/v1/virtual-machines/{vm_id}")).json()
        assert "host_id" not in users_vm and "last_host_id" not in users_vm
        assert admins_vm["host_id"] in {str(h) for h in stack.zone.host_ids}
        listed = (await as_user.get("/v1/virtual-machines", params={"consistent": "true"})).json()
        assert [v["id"] for v in listed["data"]] == [vm_id]
        assert "host_id" not in listed["data"][0]

        volume_id = users_vm["root_volume_id"]
        users_volume = (await as_user.get(f"/v1/volumes/{volume_id}")).json()
        admins_volume = (await as_admin.get(f"/v1/volumes/{volume_id}")).json()
        assert "pool_id" not in users_volume and "path" not in users_volume
        assert admins_volume["pool_id"] in {str(p) for p in stack.zone.pool_ids}
        assert "pool_id" not in (await as_user.get("/v1/volumes")).json()["data"][0]


async def test_the_document_declares_the_users_and_the_administrators_views(stack: Stack) -> None:
    async with stack.http() as http:
        document = (await http.get("/openapi.json")).json()
    for path, admin_view, user_view in (
        ("/v1/virtual-machines/{vm_id}", "VirtualMachineAdminPublic", "VirtualMachinePublic"),
        ("/v1/volumes/{volume_id}", "VolumeAdminPublic", "VolumePublic"),
    ):
        schema = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]
        refs = {branch["$ref"].rsplit("/", 1)[-1] for branch in schema["anyOf"]}
        assert refs == {admin_view, user_view}
    schemas = document["components"]["schemas"]
    assert "host_id" not in schemas["VirtualMachinePublic"]["properties"]
    assert "pool_id" not in schemas["VolumePublic"]["properties"]
