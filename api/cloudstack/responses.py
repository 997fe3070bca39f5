"""CloudStack's JSON answers, shaped so that CloudStack clients read them unchanged.

Clients such as `cs` (5.2), CloudMonkey and Terraform's provider parse these bodies, not
OpenAPI: each answer is an object with exactly one key, `<command in lower case>response`
(`cs` refuses any other top level), and what is inside follows CloudStack's serializer:

* an object: `{"<cmd>response": {"<entity>": {...}}}`;
* a list: `{"<cmd>response": {"count": <total>, "<entity>": [...]}}`, and an empty page is
  `{"<cmd>response": {}}`, no count. `count` is the total across all pages: `cs` pages with
  `page`/`pagesize` and stops once it holds `count` items, or at a page with no list key; a page
  holding any key besides `count` and the list ends its paging early, so there is none;
* an async command's acceptance: `{"<cmd>response": {"jobid": ..., "id": ...}}`;
* an error: `{"<cmd>response": {"uuidList": [], "errorcode": 431, "cserrorcode": 9999,
  "errortext": ...}}` with HTTP status = errorcode (`cs` raises CloudStackApiException carrying
  the inner object for any non-200), under `errorresponse` when the command is unknown;
* queryAsyncJobResult: always HTTP 200, the job's outcome in `jobstatus`/`jobresultcode`.

Dates are CloudStack's `yyyy-MM-dd'T'HH:mm:ssZ`, rendered in UTC: `2026-12-03T10:00:00+0000`.
Everything returns plain dicts; `cloudstack_json` alone knows Starlette.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from starlette.responses import JSONResponse

#: The response name CloudStack answers errors under when the command is missing or unknown.
UNKNOWN_COMMAND_RESPONSE = "errorresponse"
#: The command whose answers `async_job_result` builds.
QUERY_ASYNC_JOB_RESULT = "queryAsyncJobResult"


class CsErrorCode(IntEnum):
    """CloudStack's `cserrorcode`: the Java exception class behind an error
    (com.cloud.utils.exception.CSExceptionErrorCode); a few of the most used."""

    CLOUD_RUNTIME = 4250
    ACCOUNT_LIMIT = 4280
    CLOUD_AUTHENTICATION = 4290
    CONCURRENT_OPERATION = 4300
    INSUFFICIENT_CAPACITY = 4325
    INTERNAL_ERROR = 4345
    INVALID_PARAMETER_VALUE = 4350
    PERMISSION_DENIED = 4365
    RESOURCE_ALLOCATION = 4370
    RESOURCE_IN_USE = 4375
    RESOURCE_UNAVAILABLE = 4380
    UNSUPPORTED_SERVICE = 4390
    REQUEST_LIMIT = 4545
    #: A ServerApiException thrown on its own: CloudStack's code for "no finer class".
    SERVER_API = 9999


class JobStatus(IntEnum):
    """`jobstatus` of queryAsyncJobResult (CloudStack's AsyncJob.Status)."""

    PENDING = 0
    SUCCEEDED = 1
    FAILED = 2
    CANCELLED = 3


def response_name(command: str) -> str:
    """The single top-level key of every answer to `command`."""
    return f"{command.lower()}response"


def object_response(command: str, entity: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A synchronous command's answer holding one entity, e.g. `{"virtualmachine": {...}}`."""
    return {response_name(command): {entity: dict(obj)}}


def list_response(
    command: str, entity: str, items: Sequence[Mapping[str, Any]], count: int
) -> dict[str, Any]:
    """One page of a list; `count` is the total across all pages, not this page's length."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    if not items:
        return {response_name(command): {}}
    return {response_name(command): {"count": count, entity: [dict(item) for item in items]}}


def async_response(command: str, job_id: str, resource_id: str | None = None) -> dict[str, Any]:
    """An async command accepted: the job to poll, and the resource it creates or acts on."""
    body: dict[str, Any] = {"jobid": job_id}
    if resource_id is not None:
        body["id"] = resource_id
    return {response_name(command): body}


def error_response(
    command: str | None,
    errorcode: int,
    text: str,
    *,
    cserrorcode: int = CsErrorCode.SERVER_API,
) -> tuple[int, dict[str, Any]]:
    """The HTTP status (= errorcode) and body of a refused request; `command=None` for a
    missing or unknown command, answered under `errorresponse` as CloudStack does."""
    if not 400 <= errorcode <= 599:
        raise ValueError(f"errorcode {errorcode} is not an HTTP error status")
    name = response_name(command) if command else UNKNOWN_COMMAND_RESPONSE
    body = {
        "uuidList": [],
        "errorcode": int(errorcode),
        "cserrorcode": int(cserrorcode),
        "errortext": text,
    }
    return int(errorcode), {name: body}


def cloudstack_date(moment: datetime) -> str:
    """`2026-12-03T10:00:00+0000`: CloudStack's date format, in UTC, to the second."""
    if moment.tzinfo is None:
        raise ValueError("a CloudStack date needs a timezone-aware datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")


def async_job_result(
    *,
    job_id: str,
    status: JobStatus,
    cmd: str,
    user_id: str,
    account_id: str,
    created: datetime,
    completed: datetime | None = None,
    instance_type: str | None = None,
    instance_id: str | None = None,
    result: Mapping[str, Any] | str | None = None,
    error: tuple[int, str] | None = None,
    proc_status: int = 0,
) -> dict[str, Any]:
    """The answer to queryAsyncJobResult (sent with HTTP 200 whatever the job's outcome).

    `cmd` is the command class CloudStack names (any stable name will do: `cs` only echoes it).
    A pending job has neither result nor error; a succeeded one has `result` (an object such as
    `{"virtualmachine": {...}}`, or text); a failed or cancelled one has `error`
    (errorcode, errortext), which becomes `jobresultcode` and `jobresult`: `cs` raises
    CloudStackApiException("Job failure", error=jobresult) for any status other than 1 or any
    non-zero jobresultcode, and reads `jobresult` and `jobresultcode` unguarded once the job
    is done, so both are always there then.
    """
    body: dict[str, Any] = {
        "jobid": job_id,
        "accountid": account_id,
        "userid": user_id,
        "cmd": cmd,
        "jobstatus": int(status),
        "jobprocstatus": proc_status,
        "jobresultcode": 0,
        "created": cloudstack_date(created),
    }
    if instance_type is not None:
        body["jobinstancetype"] = instance_type
    if instance_id is not None:
        body["jobinstanceid"] = instance_id
    body.update(_outcome(status, completed, result, error))
    return {response_name(QUERY_ASYNC_JOB_RESULT): body}


def cloudstack_json(body: Mapping[str, Any], status_code: int = 200) -> JSONResponse:
    """An answer as Starlette sends it: `application/json`, which `cs` requires to parse it."""
    return JSONResponse(dict(body), status_code=status_code)


def _outcome(
    status: JobStatus,
    completed: datetime | None,
    result: Mapping[str, Any] | str | None,
    error: tuple[int, str] | None,
) -> dict[str, Any]:
    """The fields that depend on how the job ended, checked for consistency."""
    if status is JobStatus.PENDING:
        if result is not None or error is not None or completed is not None:
            raise ValueError("a pending job has no result, error or completion time yet")
        return {}
    if completed is None:
        raise ValueError(f"a job that is {status.name.lower()} needs its completion time")
    if status is JobStatus.SUCCEEDED:
        if result is None or error is not None:
            raise ValueError("a succeeded job has a result and no error")
        return {
            "completed": cloudstack_date(completed),
            "jobresulttype": "text" if isinstance(result, str) else "object",
            "jobresult": result if isinstance(result, str) else dict(result),
        }
    if error is None or result is not None:
        raise ValueError(f"a {status.name.lower()} job has an error and no result")
    errorcode, errortext = error
    return {
        "completed": cloudstack_date(completed),
        "jobresultcode": int(errorcode),
        "jobresulttype": "object",
        "jobresult": {"errorcode": int(errorcode), "errortext": errortext},
    }
