"""Bad input gets a clear 4xx naming the field and the reason, never a 500."""

from __future__ import annotations

import asyncio
import base64
import select
import socket
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack
from tests.support import ADMIN_KEY


def order(stack: Stack, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "zone_id": str(stack.zone.zone_id),
        "service_offering_id": str(stack.zone.small_offering_id),
        "template_id": str(stack.zone.template_id),
    }
    body.update(overrides)
    return body


def field_of(response_json: dict[str, Any]) -> list[str]:
    return [str(part) for part in response_json["detail"][0]["loc"]]


@pytest.mark.parametrize(
    ("overrides", "field", "status"),
    [
        ({"zone_id": "not-a-uuid"}, "zone_id", 422),
        ({"service_offering_id": None}, "service_offering_id", 422),
        ({"name": "9starts-with-digit"}, "name", 422),
        ({"name": "x" * 64}, "name", 422),
        ({"root_disk_size_gib": 0}, "root_disk_size_gib", 422),
        ({"root_disk_size_gib": 1}, "root_disk_size_gib", 422),  # smaller than the template
        ({"unexpected": "field"}, "unexpected", 422),
        ({"service_offering_id": str(uuid.uuid4())}, "service_offering_id", 422),
        ({"template_id": str(uuid.uuid4())}, "template_id", 422),
        ({"zone_id": str(uuid.uuid4())}, "zone_id", 422),
        ({"network_id": str(uuid.uuid4())}, "network_id", 422),
    ],
)
async def test_a_bad_deploy_request_is_refused_naming_the_field(
    stack: Stack, overrides: dict[str, object], field: str, status: int
) -> None:
    async with stack.http() as http:
        response = await http.post("/v1/virtual-machines", json=order(stack, **overrides))
    assert response.status_code == status, response.text
    assert field_of(response.json())[-1] == field
    assert response.json()["detail"][0]["msg"]
    assert response.json()["errorcode"] in (430, 431)


async def test_a_body_that_is_not_json_is_a_422(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.post(
            "/v1/virtual-machines", content=b"{nope", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422


async def test_unknown_ids_are_404(stack: Stack) -> None:
    async with stack.http() as http:
        for path in ("virtual-machines", "jobs", "volumes", "zones", "hosts", "templates"):
            response = await http.get(f"/v1/{path}/{uuid.uuid4()}")
            assert response.status_code == 404, (path, response.text)
            assert "not found" in response.json()["detail"][0]["msg"]


async def test_a_malformed_id_in_the_path_is_a_422(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/virtual-machines/123")
    assert response.status_code == 422 and field_of(response.json()) == ["path", "vm_id"]


async def test_a_missing_or_unknown_api_key_is_401(stack: Stack) -> None:
    async with stack.http(key=None) as anonymous, stack.http(key="wrong") as stranger:
        assert (await anonymous.get("/v1/virtual-machines")).status_code == 401
        assert (await stranger.get("/v1/virtual-machines")).status_code == 401


async def test_a_cursor_this_api_did_not_hand_out_is_a_422(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/virtual-machines", params={"cursor": "garbage!"})
    assert response.status_code == 422 and field_of(response.json()) == ["query", "cursor"]


@pytest.mark.parametrize("limit", [0, 501, -1])
async def test_a_limit_out_of_range_is_a_422(stack: Stack, limit: int) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/virtual-machines", params={"limit": limit})
    assert response.status_code == 422 and field_of(response.json()) == ["query", "limit"]


async def test_a_bad_simulator_fault_names_the_field(stack: Stack) -> None:
    async with stack.http() as http:
        unknown_op = await http.post(
            "/v1/simulator/faults", json={"operation": "explode", "action": "fail"}
        )
        unknown_host = await http.post(
            "/v1/simulator/faults",
            json={"operation": "start_vm", "action": "fail", "host_id": str(uuid.uuid4())},
        )
        bad_action = await http.post(
            "/v1/simulator/faults", json={"operation": "start_vm", "action": "maybe"}
        )
    assert unknown_op.status_code == 422 and field_of(unknown_op.json())[-1] == "operation"
    assert unknown_host.status_code == 422 and field_of(unknown_host.json())[-1] == "host_id"
    assert bad_action.status_code == 422 and field_of(bad_action.json())[-1] == "action"


# -- every text field refuses what a read model cannot store -----------------------------------
async def test_a_nul_in_any_name_is_a_422_naming_the_field_before_any_job(stack: Stack) -> None:
    zone = stack.zone
    refused = {
        "/v1/volumes": (
            {
                "zone_id": str(zone.zone_id),
                "disk_offering_id": str(zone.disk_offering_id),
                "name": "a\u0000b",
            },
            "name",
        ),
        "/v1/virtual-machines": (order(stack, display_name="web\u0000"), "display_name"),
        f"/v1/volumes/{uuid.uuid4()}/snapshots": ({"name": "s\u0000"}, "name"),
        f"/v1/virtual-machines/{uuid.uuid4()}/snapshots": ({"name": "s\u001b[2J"}, "name"),
        "/v1/clusters": (
            {"pod_id": str(zone.pod_id), "name": "c\u0000", "hypervisor": "KVM"},
            "name",
        ),
        "/v1/storage-pools": (
            {
                "name": "p\u0085",
                "scope": "ZONE",
                "zone_id": str(zone.zone_id),
                "path": "/p",
                "capacity_bytes": 1024,
            },
            "name",
        ),
        "/v1/simulator/faults": (
            {"operation": "start_vm", "action": "fail", "message": "boom\u0000"},
            "message",
        ),
    }
    async with stack.http() as http:
        for path, (body, field) in refused.items():
            response = await http.post(path, json=body)
            assert response.status_code == 422, (path, response.text)
            assert field_of(response.json()) == ["body", field], path
            assert "U+00" in response.json()["detail"][0]["msg"], path
            assert response.json()["errorcode"] == 430


async def test_an_idempotency_key_with_a_control_character_is_a_422(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.post(
            "/v1/virtual-machines", json=order(stack), headers={"Idempotency-Key": "k\tey"}
        )
    assert response.status_code == 422
    assert field_of(response.json()) == ["header", "Idempotency-Key"]


@pytest.mark.parametrize(
    "listing",
    ["virtual-machines", "events", "jobs", "volumes", "snapshots", "templates", "zones"],
)
async def test_a_nul_in_a_filter_is_a_422_naming_it_not_a_500(stack: Stack, listing: str) -> None:
    async with stack.http() as http:
        response = await http.get(f"/v1/{listing}?state=%00&type=%00&job_type=%00")
    assert response.status_code == 422, response.text
    assert field_of(response.json())[0] == "query"


# -- every number has a real-world range -------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["virtual-machines", "volumes", "jobs", "events", "snapshots", "zones", "templates"]
)
async def test_a_page_past_any_real_listing_is_a_422_naming_page(stack: Stack, path: str) -> None:
    async with stack.http() as http:
        response = await http.get(f"/v1/{path}", params={"page": 2**63 - 1})
    assert response.status_code == 422, response.text
    assert field_of(response.json()) == ["query", "page"]


async def test_a_page_of_usage_corrections_past_any_real_one_is_a_422(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get(
            "/v1/usage-corrections",
            params={
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-02T00:00:00Z",
                "page": 2**63 - 1,
            },
        )
    assert response.status_code == 422, response.text
    assert field_of(response.json()) == ["query", "page"]


@pytest.mark.parametrize("capacity", [2**63, 10**30, 0, -1])
async def test_a_storage_capacity_no_device_has_is_a_422(stack: Stack, capacity: int) -> None:
    async with stack.http() as http:
        response = await http.post(
            "/v1/storage-pools",
            json={
                "name": "huge",
                "scope": "ZONE",
                "zone_id": str(stack.zone.zone_id),
                "path": "/p",
                "capacity_bytes": capacity,
            },
        )
    assert response.status_code == 422, response.text
    assert field_of(response.json()) == ["body", "capacity_bytes"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("delay_seconds", 1e30), ("delay_seconds", -1), ("error_code", 500)],
)
async def test_a_simulator_fault_number_out_of_range_is_a_422(
    stack: Stack, field: str, value: float
) -> None:
    async with stack.http() as http:
        response = await http.post(
            "/v1/simulator/faults",
            json={"operation": "start_vm", "action": "delay", field: value},
        )
    assert response.status_code == 422 and field_of(response.json())[-1] == field


# -- cursors ----------------------------------------------------------------------------------
def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [b"[" * 5000 + b"]" * 5000, b"[[[[[[[[1]]]]]]]]", b'[Infinity, 1, "a", "b"]', b"[NaN]", b"{}"],
)
async def test_a_cursor_the_api_never_handed_out_is_a_422_naming_cursor(
    stack: Stack, raw: bytes
) -> None:
    async with stack.http() as http:
        for path, extra in (
            ("/v1/virtual-machines", {}),
            ("/v1/events", {}),
            (
                "/v1/usage-records",
                {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
            ),
        ):
            response = await http.get(path, params={**extra, "cursor": _cursor(raw)})
            assert response.status_code == 422, (path, response.text)
            assert field_of(response.json()) == ["query", "cursor"], path


# -- authentication before the body, bounded bodies, a usable connection -------------------------
def _exchange(stack: Stack, head: bytes, body: bytes = b"") -> tuple[bytes, bytes]:
    """One request over a raw socket: its head and as much body as the server read; the
    response's head and body, read until the server closes or answers in full."""
    url = httpx.URL(stack.url)
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(head + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head_part, _, rest = received.partition(b"\r\n\r\n")
    return head_part, rest


async def test_an_unauthenticated_300_megabyte_post_is_a_401_before_the_body_is_read(
    stack: Stack,
) -> None:
    head = (
        b"POST /v1/volumes HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Content-Length: 300000000\r\n\r\n"
    )
    # Only the head and 1 kB are sent: a server that read the body first would wait for it.
    response_head, _ = await asyncio.to_thread(_exchange, stack, head, b"{" * 1024)
    assert response_head.startswith(b"HTTP/1.1 401"), response_head
    assert b"connection: close" in response_head.lower()


async def test_a_declared_body_over_the_limit_is_a_413_before_it_is_read(stack: Stack) -> None:
    head = (
        b"POST /v1/volumes HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {ADMIN_KEY}\r\n".encode()
        + b"Content-Length: 300000000\r\n\r\n"
    )
    response_head, _ = await asyncio.to_thread(_exchange, stack, head, b"{" * 1024)
    assert response_head.startswith(b"HTTP/1.1 413"), response_head
    assert b"connection: close" in response_head.lower()


def _stream_until_answered(stack: Stack, head: bytes, chunk: bytes, most: int) -> tuple[bytes, int]:
    """Send a chunked body chunk by chunk until the server answers (or `most` bytes went):
    the answer's head, and how many body bytes were sent by then."""
    url = httpx.URL(stack.url)
    sent = 0
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(head)
        while sent < most:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break  # closed on us: the answer is waiting
            sent += len(chunk)
        received = b""
        while b"\r\n\r\n" not in received:
            part = sock.recv(65536)
            if not part:
                break
            received += part
    return received.partition(b"\r\n\r\n")[0], sent


async def test_a_chunked_body_is_refused_with_413_once_it_passes_the_limit(stack: Stack) -> None:
    head = (
        b"POST /v1/volumes HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {ADMIN_KEY}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    most = 300 * 1024 * 1024
    response_head, sent = await asyncio.to_thread(
        _stream_until_answered, stack, head, b" " * 65536, most
    )
    assert response_head.startswith(b"HTTP/1.1 413"), response_head
    assert b"connection: close" in response_head.lower()
    assert sent < most  # answered long before the client was done


async def test_malformed_json_without_a_key_is_a_401(stack: Stack) -> None:
    async with stack.http(key=None) as http:
        response = await http.post(
            "/v1/volumes", content=b"{nope", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 401 and response.json()["errorcode"] == 401


async def test_a_keep_alive_connection_stays_usable_after_refusals(stack: Stack) -> None:
    ports: set[int] = set()

    async def remember(response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        if stream is not None:
            ports.add(stream.get_extra_info("socket").getsockname()[1])

    async with httpx.AsyncClient(
        base_url=stack.url,
        headers={"X-API-Key": ADMIN_KEY},
        event_hooks={"response": [remember]},
        limits=httpx.Limits(max_connections=1),
    ) as http:
        for params in ({"page": 2**63}, {"state": "\x00"}, {"cursor": "garbage"}, {}):
            response = await http.get("/v1/virtual-machines", params=params)
            assert response.status_code in (200, 422)
            assert "connection" not in response.headers
    assert len(ports) == 1  # one connection served them all


# -- no secret is kept --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/hosts", {"name": "h1", "address": "root:pw@10.0.0.77"}, ["address"]),
        ("/v1/hosts", {"name": "h1", "address": "root%3Apw%4010.0.0.77"}, ["address"]),
        (
            "/v1/storage-pools",
            {
                "name": "p",
                "scope": "ZONE",
                "path": "nfs://admin:pw@filer/export",
                "capacity_bytes": 1024,
            },
            ["path"],
        ),
        (
            "/v1/storage-pools",
            {
                "name": "p",
                "scope": "ZONE",
                "path": "cifs://filer/share?PassWord=pw",
                "capacity_bytes": 1024,
            },
            ["path"],
        ),
        (
            "/v1/clusters",
            {
                "name": "v",
                "hypervisor": "VMware",
                "connection": {
                    "vcenter_address": "administrator:pw@vc",
                    "datacenter": "d",
                    "vcenter_cluster": "c",
                },
            },
            ["connection", "vcenter_address"],
        ),
        (
            "/v1/clusters",
            {
                "name": "x",
                "hypervisor": "XenServer",
                "connection": {"pool_master_address": "root:pw@xen-1"},
            },
            ["connection", "pool_master_address"],
        ),
        (
            "/v1/clusters",
            {
                "name": "k",
                "hypervisor": "KVM",
                "connection": {"libvirt_uri": "qemu+tcp://h/system?password=pw"},
            },
            ["connection", "libvirt_uri"],
        ),
        (
            "/v1/clusters",
            {
                "name": "k",
                "hypervisor": "KVM",
                "connection": {"libvirt_uri": "qemu+tcp://root%3Apw%40h/system"},
            },
            ["connection", "libvirt_uri"],
        ),
        (
            "/v1/clusters",
            {
                "name": "b",
                "hypervisor": "BareMetal",
                "connection": {"bmc_addresses": ["10.0.1.21", "ADMIN:ADMIN@10.0.1.22"]},
            },
            ["connection", "bmc_addresses", "1"],
        ),
    ],
)
async def test_an_address_carrying_credentials_is_refused_saying_where_they_belong(
    stack: Stack, path: str, body: dict[str, object], field: list[str]
) -> None:
    body = {
        **body,
        "cluster_id": str(stack.zone.cluster_ids[0]),
        "zone_id": str(stack.zone.zone_id),
        "pod_id": str(stack.zone.pod_id),
    }
    if path == "/v1/hosts":
        body.pop("zone_id")
        body.pop("pod_id")
    elif path == "/v1/clusters":
        body.pop("zone_id")
        body.pop("cluster_id")
    else:
        body.pop("pod_id")
        body.pop("cluster_id")
    async with stack.http() as http:
        response = await http.post(path, json=body)
    assert response.status_code == 422, response.text
    assert field_of(response.json()) == ["body", *field]
    assert "agent's configuration" in response.json()["detail"][0]["msg"]
    assert "pw" not in response.text.replace("password", "")
