"""The OpenAPI document, telling every status an operation can answer.

FastAPI documents the success and its own 422. Stratus answers more, from places FastAPI does
not see: the request admission (401 before the body, 413, 422 for a parameter no text field
takes), the domain (404, 409, 503, ...), the last net for the unforeseen (500). Each is declared
here, with the one error shape all of them share (`ErrorBody`), by rules that follow from how
the API is built: every operation authenticates, has a bounded body and parameters; one with a
path parameter can name nothing; one an administrator alone may call refuses users; one that
submits work meets the domain's refusals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from api.admission import OPEN_PATHS
from api.auth import require_admin, require_any_admin
from api.errors import ErrorBody
from domain.text import TEXT_PATTERN

ERROR_SCHEMA = "ErrorBody"

EVERY_OPERATION = {
    401: "No API key, an unknown one, or a disabled user or account (checked before the body "
    "is read)",
    413: "The request body is larger than the limit (STRATUS_MAX_REQUEST_BODY_BYTES)",
    422: "A malformed parameter or body field (errorcode 430), or one naming something that "
    "cannot be used (431); `loc` names it",
    429: "Too many requests with this key (errorcode 429); Retry-After says when to retry",
    500: "An unforeseen error, logged (errorcode 530)",
}
NAMES_A_RESOURCE = {404: "The resource the path names does not exist, or is not yours"}
FOR_ADMINISTRATORS = {403: "For administrators only (errorcode 531)"}
#: Parameters a user may only give its own value (or none).
SCOPED_PARAMETERS = frozenset({"account_id", "account", "host_id"})
SCOPED = {403: "Another account's resources, or a filter for administrators (errorcode 531)"}
SUBMITS_WORK = {
    400: "An action the resource does not support (errorcode 432)",
    403: "Acting for another account, or an operation for administrators (errorcode 531)",
    404: "A resource named in the request does not exist, or is not yours",
    409: "The resource's state forbids it now, the Idempotency-Key was used for another "
    "request (errorcode 431, 536), or a resource limit would be exceeded (532)",
    503: "No capacity, or a resource unavailable (errorcode 533, 534)",
}


def refusals_of(dependant: Dependant, methods: set[str], path: str = "") -> dict[int, str]:
    """The error statuses an operation can answer, with why (an open path, such as the health
    checks, asks for no key)."""
    statuses = dict(EVERY_OPERATION)
    if path in OPEN_PATHS:
        del statuses[401]
        del statuses[429]
    if dependant.path_params:
        statuses.update(NAMES_A_RESOURCE)
    if any(d.call in (require_admin, require_any_admin) for d in _dependencies(dependant)):
        statuses.update(FOR_ADMINISTRATORS)
    if any(p.alias in SCOPED_PARAMETERS for p in dependant.query_params):
        statuses.update(SCOPED)
    if methods & {"POST", "PUT", "PATCH", "DELETE"}:
        statuses.update(SUBMITS_WORK)
    return statuses


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from _dependencies(dependency)


def _document_text_rule(parameter: dict[str, Any]) -> None:
    """A string query or header parameter takes no character a text field refuses: the
    admission enforces it for every parameter, typed or not, so the document says it for each."""
    if parameter.get("in") not in ("query", "header"):
        return
    schema = parameter.get("schema", {})
    for branch in [schema, *schema.get("anyOf", [])]:
        if (
            branch.get("type") == "string"
            and "pattern" not in branch
            and "enum" not in branch
            and "format" not in branch
        ):
            branch["pattern"] = TEXT_PATTERN


def install_openapi_document(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(error_schema.pop("$defs", {}))
        schemas[ERROR_SCHEMA] = error_schema
        reference = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
        for route in iter_route_contexts(app.routes):
            if not isinstance(route.original_route, APIRoute):
                continue
            methods = set(route.methods or ())
            path = document["paths"].get(route.path_format or "", {})
            for method in methods:
                operation = path.get(method.lower())
                if operation is None:
                    continue
                refusals = refusals_of(route.dependant, methods, route.path_format or "")
                for status, why in sorted(refusals.items()):
                    operation["responses"][str(status)] = {
                        "description": why,
                        "content": {"application/json": {"schema": reference}},
                    }
                for parameter in operation.get("parameters", []):
                    _document_text_rule(parameter)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
