"""The request admission in front of FastAPI: the key is checked before a byte of the body is
read, a body over the limit is refused (declared or streamed) without being buffered, a
parameter no text field takes is named, and the unforeseen is a clean 500 that keeps the
connection. Driven as ASGI, in process, so the test sees exactly which messages were read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

import pytest

from api.app import create_app
from api.services import CloudServices
from api.settings import ApiSettings
from domain.account import AccountState, AccountType, api_key_digest

KEY = "k" * 40
LIMIT = 4096


class FakeReads:
    """The accounts read model with one admin account whose key is KEY."""

    def __init__(self) -> None:
        self.lookups = 0

    def find_one(self, table: str, filters: dict[str, Any]) -> dict[str, Any] | None:
        self.lookups += 1
        if table == "inventory" and filters.get("lookup_key") == api_key_digest(KEY):
            return {
                "id": uuid.uuid4(),
                "kind": "account",
                "name": "admin",
                "data": {
                    "state": AccountState.ENABLED.value,
                    "account_type": AccountType.ADMIN.value,
                },
            }
        return None


class Exchange:
    """One HTTP request as ASGI messages, recording what the app pulled and answered."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.pending = list(chunks)
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if not self.pending:
            return {"type": "http.disconnect"}
        self.pulled += 1
        chunk = self.pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.pending)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def app_with_reads() -> tuple[Any, FakeReads]:
    reads = FakeReads()
    services = CloudServices(cloud=None, reads=reads, temporal=None, task_queue="q")  # type: ignore[arg-type]
    app = create_app(services, ApiSettings(max_request_body_bytes=LIMIT))

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    @app.post("/v1/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return {"keys": sorted(body)}

    return app, reads


async def call(
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    chunks: Iterable[bytes] = (b"",),
    query: bytes = b"",
) -> Exchange:
    app, _ = app_with_reads()
    exchange = Exchange(chunks)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, exchange.receive, exchange.send)
    return exchange


def keyed(**extra: str) -> dict[str, str]:
    return {"X-API-Key": KEY, "Content-Type": "application/json", **extra}


async def test_a_request_without_a_key_is_refused_before_its_body_is_read() -> None:
    exchange = await call(
        "POST",
        "/v1/echo",
        headers={"Content-Type": "application/json", "Content-Length": "300000000"},
        chunks=[b"x" * 1024] * 10,
    )
    assert exchange.status == 401 and exchange.pulled == 0
    assert (
        exchange.json["errorcode"] == 401 and exchange.json["detail"][0]["type"] == "unauthorized"
    )
    assert exchange.headers["connection"] == "close"


async def test_malformed_json_without_a_key_is_a_401_not_a_422() -> None:
    exchange = await call(
        "POST", "/v1/echo", headers={"Content-Type": "application/json"}, chunks=[b"{nope"]
    )
    assert exchange.status == 401


async def test_an_unknown_key_is_a_401_and_a_bearer_token_is_a_key() -> None:
    stranger = await call("GET", "/v1/boom", headers={"X-API-Key": "wrong"})
    assert stranger.status == 401 and stranger.json["detail"][0]["msg"] == "unknown API key"
    bearer = await call(
        "POST",
        "/v1/echo",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        chunks=[b'{"a": 1}'],
    )
    assert bearer.status == 200 and bearer.json == {"keys": ["a"]}


async def test_a_declared_length_over_the_limit_is_a_413_before_the_body_is_read() -> None:
    exchange = await call(
        "POST", "/v1/echo", headers=keyed(**{"Content-Length": str(LIMIT + 1)}), chunks=[b"{}"]
    )
    assert exchange.status == 413 and exchange.pulled == 0
    assert exchange.json["detail"][0]["loc"] == ["body"]
    assert exchange.headers["connection"] == "close"


async def test_a_streamed_body_is_refused_once_it_passes_the_limit_not_after() -> None:
    chunks = [b" " * 1000] * 100  # 100 kB, chunked: no length to check first
    exchange = await call(
        "POST", "/v1/echo", headers=keyed(**{"Transfer-Encoding": "chunked"}), chunks=chunks
    )
    assert exchange.status == 413
    assert exchange.pulled == LIMIT // 1000 + 1  # stopped at the first chunk past the limit
    assert exchange.headers["connection"] == "close"


async def test_a_body_within_the_limit_reaches_the_route_whole() -> None:
    body = json.dumps({f"k{i}": "v" * 10 for i in range(100)}).encode()
    assert len(body) < LIMIT
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
    exchange = await call("POST", "/v1/echo", headers=keyed(), chunks=pieces)
    assert exchange.status == 200 and len(exchange.json["keys"]) == 100


@pytest.mark.parametrize("query", [b"state=%00", b"state=a%1Fb", b"x%00=1", b"q=%E2%80%A8"])
async def test_a_query_parameter_no_text_field_takes_is_a_422_naming_it(query: bytes) -> None:
    exchange = await call("GET", "/v1/boom", headers=keyed(), query=query)
    assert exchange.status == 422
    loc = exchange.json["detail"][0]["loc"]
    assert loc[0] == "query" and loc[1] == query.split(b"=")[0].decode().replace("%00", "\x00")


async def test_the_unforeseen_is_a_clean_500_with_code_530_and_no_trace() -> None:
    exchange = await call("GET", "/v1/boom", headers=keyed())
    assert exchange.status == 500 and exchange.json["errorcode"] == 530
    assert "secret internals" not in json.dumps(exchange.json)
    assert "connection" not in exchange.headers  # the body was read: keep-alive stays usable


async def test_a_body_nested_too_deeply_for_the_parser_is_a_422_not_a_500() -> None:
    deep = b"[" * 1500 + b"]" * 1500
    exchange = await call("POST", "/v1/echo", headers=keyed(), chunks=[deep])
    assert exchange.status == 422 and exchange.json["detail"][0]["loc"] == ["body"]


async def test_a_wrong_method_lists_every_method_of_the_path_in_allow() -> None:
    exchange = await call("PATCH", "/v1/volumes", headers=keyed())
    assert exchange.status == 405
    assert exchange.headers["allow"] == "GET, POST"
    assert exchange.json["errorcode"] == 405


async def test_documentation_and_health_need_no_key() -> None:
    assert (await call("GET", "/openapi.json")).status == 200
