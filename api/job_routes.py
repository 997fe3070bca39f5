"""Routes that submit a job, registered from a router's table of operations.

Each operation on a resource (start a VM, resize a volume, ...) is one declarative row: its
path, method, OpenAPI summary, request body model and how its job's input is built. This module
turns a row into a FastAPI route whose parameters are exactly what a hand-written handler would
declare (the path's ids, the caller, the body, the `Idempotency-Key` header), so the OpenAPI
document reads as it would for one handler per operation, and hands every call to the router's
one submission path.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from api.auth import Caller, CurrentCaller
from api.dependencies import IdempotencyKey, Services
from api.services import CloudServices

B = TypeVar("B", bound=BaseModel | None)
Accepted = TypeVar("Accepted", bound=BaseModel)
_PATH_PARAMETER = re.compile(r"{(\w+)}")


@dataclass(frozen=True, kw_only=True)
class JobRoute(Generic[B]):
    """One operation a router offers as a job."""

    path: str
    #: The OpenAPI summary.
    summary: str
    #: The handler's name: the OpenAPI operation id is made from it, so clients generated
    #: from the document keep their method names.
    name: str
    #: The request body's model; None: the operation takes no body.
    body: type[BaseModel] | None = None
    #: A body that may be left out stands for its model's defaults.
    body_required: bool = False
    method: str = "POST"


@dataclass(frozen=True)
class JobCall(Generic[B]):
    """One call of a job route, as its router's submission path receives it."""

    #: The ids the path names (every path parameter is a UUID).
    ids: dict[str, UUID]
    #: The body, or its model's defaults when it was left out; None for a route without one.
    body: B
    caller: Caller
    services: CloudServices
    response: Response
    idempotency_key: str | None


def add_job_route(
    router: APIRouter,
    route: JobRoute[B],
    submit: Callable[[JobCall[B]], Awaitable[Accepted]],
    *,
    accepted: type[Accepted],
) -> None:
    """Register `route` on `router`: 202 with `accepted`, the call handed to `submit`."""
    id_names = _PATH_PARAMETER.findall(route.path)

    async def endpoint(**given: Any) -> Accepted:
        body: Any = given.get("body")
        if body is None and route.body is not None:
            body = route.body()
        return await submit(
            JobCall(
                ids={name: given[name] for name in id_names},
                body=body,
                caller=given["caller"],
                services=given["services"],
                response=given["response"],
                idempotency_key=given["idempotency_key"],
            )
        )

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        _parameters(route, id_names), return_annotation=accepted
    )
    router.add_api_route(
        route.path,
        endpoint,
        methods=[route.method],
        name=route.name,
        summary=route.summary,
        status_code=status.HTTP_202_ACCEPTED,
        response_model=accepted,
    )


def _parameters(route: JobRoute[Any], id_names: list[str]) -> list[inspect.Parameter]:
    """The parameters, in the order a hand-written handler declares them: the path's ids, a
    required body, the caller and services, an optional body, the Idempotency-Key header."""

    def parameter(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> Any:
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
        )

    parameters = [parameter(name, UUID) for name in id_names]
    if route.body is not None and route.body_required:
        parameters.append(parameter("body", route.body))
    parameters += [
        parameter("caller", CurrentCaller),
        parameter("services", Services),
        parameter("response", Response),
    ]
    if route.body is not None and not route.body_required:
        parameters.append(parameter("body", route.body | None, None))
    parameters.append(parameter("idempotency_key", IdempotencyKey, None))
    return parameters
