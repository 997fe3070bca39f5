"""No request can stop the cloud: every operation of the OpenAPI document, each of its
parameters and body fields set in turn to a hostile value (NUL and other control characters,
the extremes of every numeric type, a deeply nested value, a huge value), answers without a
500, and the read models are current afterwards (a NUL once accepted in a volume name stopped
every projection that met it).

The requests are built from the document itself, so a new operation or field is covered the
day it is added. The rest of each request is well formed (real ids where a field names the test
zone's resources), so a hostile value meets the handler, not only the first validation error.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from api.reads import CONSISTENCY_HEADER
from tests.e2e.conftest import Stack, wait_for_job

#: JSON values no field may take, or that sit on the edge of every range.
HOSTILE_VALUES: list[Any] = [
    "\x00",
    "name\x00with-nul",
    "\x01\x08\x0b\x1b[31m\x7f",
    "\u0085\u2028\u2029",
    "\ufffe\uffff",
    "\ud800",  # a lone surrogate, as a JSON escape
    2**63,
    -(2**63) - 1,
    10**30,
    1.7976931348623157e308,
    -1e308,
    0,
    -1,
    True,
    {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
    ["many"] * 20_000,
    "x" * 300_000,
]
#: The same as query and path text (numbers travel as their digits).
HOSTILE_TEXT = ["\x00", "a\x00b", "\x01\x1f", "\x7f\x85", "\u2028", str(2**63), "-1", "1e400"]
#: What a header may carry at all (the HTTP client sends no control character but tab).
HOSTILE_HEADERS = ["a\tb", "x" * 8000, "\u00e9\u00ff"]
#: A body nested deeper than any parser recurses, and JSON's non-numbers, as raw bytes.
RAW_BODIES = [b"[" * 100_000 + b"]" * 100_000, b'{"size_gib": NaN, "name": Infinity}']


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


class RequestBuilder:
    """Well-formed requests from the document, pointing at the test zone where it can."""

    def __init__(self, document: dict[str, Any], stack: Stack) -> None:
        self.document = document
        zone = stack.zone
        self.ids = {
            "zone_id": zone.zone_id,
            "pod_id": zone.pod_id,
            "cluster_id": zone.cluster_ids[0],
            "host_id": zone.host_ids[0],
            "pool_id": zone.pool_ids[0],
            "network_id": zone.network_id,
            "service_offering_id": zone.small_offering_id,
            "disk_offering_id": zone.disk_offering_id,
            "template_id": zone.template_id,
        }

    def value(self, name: str, schema: dict[str, Any]) -> Any:
        schema = _resolve(self.document, schema)
        if "anyOf" in schema:
            branch = next(b for b in schema["anyOf"] if b.get("type") != "null")
            return self.value(name, branch)
        if "enum" in schema:
            return schema["enum"][-1]
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if schema.get("format") == "uuid":
            return str(self.ids.get(name, uuid.uuid4()))
        if kind == "string":
            return {
                "network-address": "10.0.0.77",
                "uri-without-credentials": "qemu:///system",
                "path-without-credentials": "/var/lib/fuzz",
                "date-time": "2026-01-01T00:00:00Z",
            }.get(schema.get("format", ""), "fuzz-1")
        if kind == "integer":
            return max(int(schema.get("minimum", 1)), 1)
        if kind == "number":
            return float(schema.get("minimum", 1.0))
        if kind == "boolean":
            return False
        if kind == "array":
            return []
        if kind == "object":
            return self.body(schema)
        return None

    def body(self, schema: dict[str, Any]) -> dict[str, Any]:
        schema = _resolve(self.document, schema)
        properties = schema.get("properties", {})
        return {name: self.value(name, properties[name]) for name in schema.get("required", [])}

    def operations(self) -> list[tuple[str, str, dict[str, Any]]]:
        found = []
        for path, item in self.document["paths"].items():
            if not path.startswith("/v1/"):
                continue
            for method, operation in item.items():
                found.append((method.upper(), path, operation))
        return found


class Prober:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.server_errors: list[str] = []
        self.sent = 0

    async def send(self, label: str, method: str, url: str, **kwargs: Any) -> None:
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.LocalProtocolError:
            return  # the client itself would not send it
        self.sent += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{label}: {response.status_code} {response.text[:200]}")
        else:
            assert response.status_code < 500


def _fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


async def probe_operation(
    prober: Prober, builder: RequestBuilder, method: str, path: str, operation: dict[str, Any]
) -> None:
    parameters = operation.get("parameters", [])
    path_values = {
        p["name"]: str(builder.value(p["name"], p["schema"]))
        for p in parameters
        if p["in"] == "path"
    }
    query = {
        p["name"]: builder.value(p["name"], p["schema"])
        for p in parameters
        if p["in"] == "query" and p.get("required")
    }
    body_schema = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema")
    )
    body = builder.body(body_schema) if body_schema else None
    url = _fill(path, path_values)
    label = f"{method} {path}"
    for parameter in parameters:
        name, where = parameter["name"], parameter["in"]
        values = HOSTILE_HEADERS if where == "header" else HOSTILE_TEXT
        for hostile in values:
            if where == "path":
                hostile_url = _fill(path, {**path_values, name: quote(hostile, safe="")})
                await prober.send(
                    f"{label} path {name}={hostile!r}", method, hostile_url, params=query, json=body
                )
            elif where == "query":
                await prober.send(
                    f"{label} query {name}={hostile[:20]!r}",
                    method,
                    url,
                    params={**query, name: hostile},
                    json=body,
                )
            else:
                await prober.send(
                    f"{label} header {name}={hostile[:20]!r}",
                    method,
                    url,
                    params=query,
                    json=body,
                    headers={name: hostile.encode("latin-1")},
                )
    if body_schema is None:
        return
    fields = [*_resolve(builder.document, body_schema).get("properties", {}), "surprise"]
    for field in fields:
        for hostile in HOSTILE_VALUES:
            content = json.dumps({**(body or {}), field: hostile}).encode()
            await prober.send(
                f"{label} body {field}={str(hostile)[:20]!r}",
                method,
                url,
                params=query,
                content=content,
                headers={"Content-Type": "application/json"},
            )
    for raw in RAW_BODIES:
        await prober.send(
            f"{label} raw body {raw[:20]!r}",
            method,
            url,
            params=query,
            content=raw,
            headers={"Content-Type": "application/json"},
        )


async def test_no_hostile_value_in_any_field_of_any_operation_gets_a_500(stack: Stack) -> None:
    async with stack.http() as http:
        document = (await http.get("/openapi.json")).json()
        faults_before = {
            f["fault_id"] for f in (await http.get("/v1/simulator/faults")).json()["data"]
        }
        builder = RequestBuilder(document, stack)
        prober = Prober(http)
        try:
            for method, path, operation in builder.operations():
                await probe_operation(prober, builder, method, path, operation)
        finally:
            for fault in (await http.get("/v1/simulator/faults")).json()["data"]:
                if fault["fault_id"] not in faults_before:
                    await http.delete(f"/v1/simulator/faults/{fault['fault_id']}")
        assert prober.sent > 1000
        assert not prober.server_errors, "\n".join(prober.server_errors)

        # The cloud still works, and every read model follows it.
        deployed = await http.post(
            "/v1/virtual-machines",
            json={
                "zone_id": str(stack.zone.zone_id),
                "service_offering_id": str(stack.zone.small_offering_id),
                "template_id": str(stack.zone.template_id),
                "name": "after-the-storm",
            },
        )
        assert deployed.status_code == 202, deployed.text
        job = await wait_for_job(http, deployed.json()["job_id"])
        assert job["status"] == "succeeded", job
        for listing in ("virtual-machines", "volumes", "jobs", "events"):
            read = await http.get(f"/v1/{listing}", params={"consistent": "true", "limit": 1})
            assert read.status_code == 200, read.text
            assert read.headers[CONSISTENCY_HEADER] == "true", listing
        vm = await http.get(
            f"/v1/virtual-machines/{deployed.json()['virtual_machine_id']}",
            params={"consistent": "true"},
        )
        assert vm.json()["state"] == "Running"
