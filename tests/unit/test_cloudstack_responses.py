"""The /client/api answers are what CloudStack clients read: proven with the real `cs` client.

Each test puts a fake server behind an unchanged `cs.CloudStack`: the server decodes the
request as the endpoint will, checks its signature with `api.cloudstack.signing.verify`,
answers with a body from `api.cloudstack.responses` rendered by `cloudstack_json`, and the test
looks at what `cs` makes of it: the value it returns, the pages it asks for, the jobs it polls
and the exceptions it raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from cs import CloudStack, CloudStackApiException

from api.cloudstack.responses import (
    CsErrorCode,
    JobStatus,
    async_job_result,
    async_response,
    cloudstack_date,
    cloudstack_json,
    error_response,
    list_response,
    object_response,
    response_name,
)
from api.cloudstack.signing import parse_expires, verify
from domain.errors import ErrorCode

SECRET = "server-side secret"
CREATED = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
Answer = tuple[int, dict[str, Any]]
Handler = Callable[[dict[str, str]], Answer]


class FakeServer:
    """A requests session standing for /client/api: verifies, then answers via `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, str]] = []

    def send(self, prepped: requests.PreparedRequest, **_: Any) -> requests.Response:
        params = self.decode(prepped)
        verify(params, SECRET, datetime.now(UTC))
        self.requests.append(params)
        status, body = self.handler(params)
        rendered = cloudstack_json(body, status)
        response = requests.Response()
        response.status_code = rendered.status_code
        response.headers["Content-Type"] = rendered.headers["content-type"]
        response._content = bytes(rendered.body)
        return response

    @staticmethod
    def decode(prepped: requests.PreparedRequest) -> dict[str, str]:
        if prepped.method == "GET":
            return dict(parse_qsl(urlsplit(prepped.url or "").query, keep_blank_values=True))
        body = prepped.body
        text = body.decode() if isinstance(body, bytes) else str(body or "")
        return dict(parse_qsl(text, keep_blank_values=True))

    def commands(self) -> list[str]:
        return [params["command"] for params in self.requests]


def client_of(server: FakeServer, method: str = "get") -> CloudStack:
    return CloudStack(
        "http://stratus.test/client/api",
        key="key",
        secret=SECRET,
        method=method,
        session=server,
        poll_interval=0,
    )


def ok(body: dict[str, Any]) -> Answer:
    return 200, body


def vm(number: int) -> dict[str, Any]:
    return {"id": f"vm-{number}", "name": f"web-{number}", "state": "Running"}


def paged(items: list[dict[str, Any]]) -> Handler:
    """A listVirtualMachines that pages `items` the way CloudStack does."""

    def handler(params: dict[str, str]) -> Answer:
        # Without fetch_list, cs sends neither page nor pagesize.
        page, size = int(params.get("page", "1")), int(params.get("pagesize", "500"))
        chunk = items[(page - 1) * size : page * size]
        return ok(list_response(params["command"], "virtualmachine", chunk, len(items)))

    return handler


def test_every_answer_has_one_key_named_after_the_lower_cased_command() -> None:
    assert response_name("listVirtualMachines") == "listvirtualmachinesresponse"
    bodies = [
        object_response("updateVirtualMachine", "virtualmachine", vm(1)),
        list_response("listZones", "zone", [{"id": "z"}], 1),
        list_response("listZones", "zone", [], 0),
        async_response("deployVirtualMachine", "job-1", "vm-1"),
        error_response("stopVirtualMachine", 431, "no")[1],
    ]
    assert [list(body) for body in bodies] == [
        ["updatevirtualmachineresponse"],
        ["listzonesresponse"],
        ["listzonesresponse"],
        ["deployvirtualmachineresponse"],
        ["stopvirtualmachineresponse"],
    ]


@pytest.mark.parametrize("method", ["get", "post"])
def test_cs_returns_an_objects_entity_from_inside_the_envelope(method: str) -> None:
    server = FakeServer(lambda p: ok(object_response(p["command"], "virtualmachine", vm(1))))
    assert client_of(server, method).updateVirtualMachine(id="vm-1") == {"virtualmachine": vm(1)}


def test_a_list_page_holds_the_total_count_and_the_entities() -> None:
    body = list_response("listVirtualMachines", "virtualmachine", [vm(1), vm(2)], 5)
    assert body == {"listvirtualmachinesresponse": {"count": 5, "virtualmachine": [vm(1), vm(2)]}}


def test_an_empty_list_is_an_empty_object_without_count_as_in_cloudstack() -> None:
    assert list_response("listZones", "zone", [], 0) == {"listzonesresponse": {}}
    assert list_response("listZones", "zone", [], 12) == {"listzonesresponse": {}}


@pytest.mark.parametrize(("total", "pages"), [(7, 3), (6, 2), (3, 1), (1, 1)])
def test_cs_fetches_every_page_and_stops_once_it_holds_count_items(total: int, pages: int) -> None:
    items = [vm(n) for n in range(total)]
    server = FakeServer(paged(items))
    assert client_of(server).listVirtualMachines(fetch_list=True, pagesize=3) == items
    assert [int(p["page"]) for p in server.requests] == list(range(1, pages + 1))
    assert {p["pagesize"] for p in server.requests} == {"3"}


def test_cs_pages_500_at_a_time_unless_told_otherwise() -> None:
    server = FakeServer(paged([vm(1)]))
    client_of(server).listVirtualMachines(fetch_list=True)
    assert server.requests[0]["page"] == "1" and server.requests[0]["pagesize"] == "500"


def test_cs_reads_an_empty_list_as_no_items_whether_paging_or_not() -> None:
    server = FakeServer(paged([]))
    assert client_of(server).listVirtualMachines(fetch_list=True) == []
    assert client_of(server).listVirtualMachines() == {}
    assert len(server.requests) == 2
    assert "page" not in server.requests[1] and "pagesize" not in server.requests[1]


def test_cs_stops_at_an_empty_page_even_when_count_promised_more() -> None:
    server = FakeServer(lambda p: ok(list_response(p["command"], "virtualmachine", [], 9)))
    assert client_of(server).listVirtualMachines(fetch_list=True, pagesize=3) == []
    assert len(server.requests) == 1


def test_a_count_that_were_the_page_length_would_end_cs_paging_after_one_page() -> None:
    items = [vm(n) for n in range(5)]

    def page_length_as_count(params: dict[str, str]) -> Answer:
        page, size = int(params["page"]), int(params["pagesize"])
        chunk = items[(page - 1) * size : page * size]
        return ok(list_response(params["command"], "virtualmachine", chunk, len(chunk)))

    server = FakeServer(page_length_as_count)
    assert client_of(server).listVirtualMachines(fetch_list=True, pagesize=2) == items[:2]


def test_an_async_answer_names_the_job_and_the_resource() -> None:
    assert async_response("deployVirtualMachine", "job-1", "vm-1") == {
        "deployvirtualmachineresponse": {"jobid": "job-1", "id": "vm-1"}
    }
    assert async_response("stopVirtualMachine", "job-2") == {
        "stopvirtualmachineresponse": {"jobid": "job-2"}
    }


def job_server(outcomes: list[dict[str, Any]]) -> FakeServer:
    """deployVirtualMachine answers a job; each queryAsyncJobResult the next outcome."""
    remaining = list(outcomes)

    def handler(params: dict[str, str]) -> Answer:
        if params["command"] == "deployVirtualMachine":
            return ok(async_response(params["command"], "job-1", "vm-1"))
        assert params["command"] == "queryAsyncJobResult" and params["jobid"] == "job-1"
        return ok(remaining.pop(0))

    return FakeServer(handler)


def job(status: JobStatus, **outcome: Any) -> dict[str, Any]:
    completed = None if status is JobStatus.PENDING else CREATED + timedelta(seconds=30)
    return async_job_result(
        job_id="job-1",
        status=status,
        cmd="org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
        user_id="user-1",
        account_id="account-1",
        created=CREATED,
        completed=completed,
        instance_type="VirtualMachine",
        instance_id="vm-1",
        **outcome,
    )


@pytest.mark.parametrize("method", ["get", "post"])
def test_cs_polls_query_async_job_result_until_the_job_succeeds(method: str) -> None:
    done = job(JobStatus.SUCCEEDED, result={"virtualmachine": vm(1)})
    server = job_server([job(JobStatus.PENDING), job(JobStatus.PENDING), done])
    result = client_of(server, method).deployVirtualMachine(zoneid="z", fetch_result=True)
    assert result == {"virtualmachine": vm(1)}
    assert server.commands() == ["deployVirtualMachine"] + ["queryAsyncJobResult"] * 3


def test_cs_without_fetch_result_returns_the_job_to_poll() -> None:
    server = job_server([])
    answer = client_of(server).deployVirtualMachine(zoneid="z")
    assert answer == {"jobid": "job-1", "id": "vm-1"}


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_cs_raises_job_failure_with_the_jobs_error_for_a_failed_or_cancelled_job(
    status: JobStatus,
) -> None:
    server = job_server([job(JobStatus.PENDING), job(status, error=(533, "no host has room"))])
    with pytest.raises(CloudStackApiException) as raised:
        client_of(server).deployVirtualMachine(zoneid="z", fetch_result=True)
    assert raised.value.args[0] == "Job failure"
    assert raised.value.error == {"errorcode": 533, "errortext": "no host has room"}
    assert raised.value.response.status_code == 200


def test_a_pending_job_has_neither_result_nor_completion() -> None:
    body = job(JobStatus.PENDING)["queryasyncjobresultresponse"]
    assert body == {
        "jobid": "job-1",
        "accountid": "account-1",
        "userid": "user-1",
        "cmd": "org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
        "jobstatus": 0,
        "jobprocstatus": 0,
        "jobresultcode": 0,
        "jobinstancetype": "VirtualMachine",
        "jobinstanceid": "vm-1",
        "created": "2026-12-03T10:00:00+0000",
    }


def test_a_finished_job_carries_its_result_type_code_and_completion() -> None:
    succeeded = job(JobStatus.SUCCEEDED, result={"virtualmachine": vm(1)})
    failed = job(JobStatus.FAILED, error=(ErrorCode.RESOURCE_UNAVAILABLE, "host down"))
    as_text = job(JobStatus.SUCCEEDED, result="done")
    assert succeeded["queryasyncjobresultresponse"] == {
        **job(JobStatus.PENDING)["queryasyncjobresultresponse"],
        "jobstatus": 1,
        "completed": "2026-12-03T10:00:30+0000",
        "jobresulttype": "object",
        "jobresult": {"virtualmachine": vm(1)},
    }
    failure = failed["queryasyncjobresultresponse"]
    assert failure["jobstatus"] == 2 and failure["jobresultcode"] == 534
    assert failure["jobresult"] == {"errorcode": 534, "errortext": "host down"}
    assert as_text["queryasyncjobresultresponse"]["jobresulttype"] == "text"


@pytest.mark.parametrize(
    ("status", "outcome", "completed"),
    [
        (JobStatus.PENDING, {"result": {"a": 1}}, None),
        (JobStatus.PENDING, {}, CREATED),
        (JobStatus.SUCCEEDED, {}, CREATED),
        (JobStatus.SUCCEEDED, {"result": {"a": 1}}, None),
        (JobStatus.SUCCEEDED, {"result": {"a": 1}, "error": (530, "x")}, CREATED),
        (JobStatus.FAILED, {}, CREATED),
        (JobStatus.FAILED, {"result": {"a": 1}}, CREATED),
        (JobStatus.CANCELLED, {"error": (530, "x")}, None),
    ],
)
def test_an_inconsistent_job_outcome_is_a_programming_error(
    status: JobStatus, outcome: dict[str, Any], completed: datetime | None
) -> None:
    with pytest.raises(ValueError):
        async_job_result(
            job_id="j",
            status=status,
            cmd="c",
            user_id="u",
            account_id="a",
            created=CREATED,
            completed=completed,
            **outcome,
        )


def test_an_error_answers_its_errorcode_as_http_status_in_cloudstacks_shape() -> None:
    status, body = error_response("deployVirtualMachine", ErrorCode.PARAM_ERROR, "bad zone")
    assert status == 431
    assert body == {
        "deployvirtualmachineresponse": {
            "uuidList": [],
            "errorcode": 431,
            "cserrorcode": 9999,
            "errortext": "bad zone",
        }
    }
    _, detailed = error_response(
        "deployVirtualMachine", 431, "x", cserrorcode=CsErrorCode.INVALID_PARAMETER_VALUE
    )
    assert detailed["deployvirtualmachineresponse"]["cserrorcode"] == 4350


def test_an_error_for_a_missing_or_unknown_command_is_an_errorresponse() -> None:
    assert list(error_response(None, 432, "no such command")[1]) == ["errorresponse"]


@pytest.mark.parametrize("errorcode", [200, 302, 399, 600, 9999])
def test_an_errorcode_that_is_no_http_error_status_is_refused(errorcode: int) -> None:
    with pytest.raises(ValueError):
        error_response("listZones", errorcode, "x")


@pytest.mark.parametrize("method", ["get", "post"])
def test_cs_raises_an_api_exception_carrying_the_error_for_a_non_200_answer(method: str) -> None:
    server = FakeServer(lambda p: error_response(p["command"], 401, "unable to verify user"))
    with pytest.raises(CloudStackApiException) as raised:
        client_of(server, method).listZones()
    assert raised.value.response.status_code == 401
    assert raised.value.error == {
        "uuidList": [],
        "errorcode": 401,
        "cserrorcode": 9999,
        "errortext": "unable to verify user",
    }


def test_a_cloudstack_answer_is_json_with_the_status_given() -> None:
    status, body = error_response("listZones", 530, "é")
    rendered = cloudstack_json(body, status)
    assert rendered.status_code == 530
    assert rendered.headers["content-type"].startswith("application/json")
    assert cloudstack_json({"listzonesresponse": {}}).status_code == 200


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 12, 3, 10, 0, 0, 999_999, tzinfo=UTC), "2026-12-03T10:00:00+0000"),
        (
            datetime(2026, 12, 3, 12, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-12-03T10:00:00+0000",
        ),
        (
            datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            "2025-12-31T23:30:00+0000",
        ),
    ],
)
def test_dates_are_cloudstacks_format_in_utc_to_the_second(moment: datetime, text: str) -> None:
    assert cloudstack_date(moment) == text
    assert parse_expires(text) == moment.replace(microsecond=0)


def test_a_naive_date_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cloudstack_date(datetime(2026, 12, 3, 10, 0))


def test_the_bodies_are_copies_not_views_of_the_callers_mappings() -> None:
    entity: dict[str, Any] = {"id": "vm-1"}
    body = object_response("updateVirtualMachine", "virtualmachine", entity)
    entity["id"] = "changed"
    assert body["updatevirtualmachineresponse"]["virtualmachine"] == {"id": "vm-1"}


def test_fake_server_decodes_both_transports_alike() -> None:
    seen: list[Mapping[str, str]] = []

    def handler(params: dict[str, str]) -> Answer:
        seen.append(params)
        return ok(list_response(params["command"], "zone", [], 0))

    for method in ("get", "post"):
        client_of(FakeServer(handler), method).listZones(name="a b&c=d")
    assert [params["name"] for params in seen] == ["a b&c=d", "a b&c=d"]
