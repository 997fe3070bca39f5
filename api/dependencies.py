"""Annotated dependencies and parameters the routers share.

Every parameter is bounded (ARCHITECTURE rule 13): a page number past what PostgreSQL's bigint
can offset, a NUL in a filter or a cursor the API never handed out is a 422 naming it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from pydantic import AfterValidator, BeforeValidator

from api.cursors import CURSOR_PATTERN, MAX_CURSOR_LENGTH, check_cursor
from api.services import CloudServices
from domain.quantities import MAX_PAGE
from domain.text import FilterText, IdempotencyKeyText


def services(request: Request) -> CloudServices:
    svc: CloudServices = request.app.state.services
    return svc


Services = Annotated[CloudServices, Depends(services)]
Limit = Annotated[int, Query(ge=1, le=500, description="rows per page")]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        pattern=CURSOR_PATTERN,
        description="continue after the last row of a previous page (its `next_cursor`)",
    ),
    AfterValidator(check_cursor),
]
PageNumber = Annotated[
    int | None, Query(ge=1, le=MAX_PAGE, description="page number (when no cursor)")
]
#: A page number that defaults to the first page.
FirstPage = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page number")]
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _not_a_number(value: Any) -> Any:
    """The document says date-time; pydantic would also take a Unix timestamp."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("must be an ISO 8601 date and time, not a number")
    return value


#: A date and time in ISO 8601, as the document says: not a number of seconds.
IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]
Consistent = Annotated[
    bool,
    Query(description="wait until the read model includes every write made before this request"),
]
#: A listing filter on a text column (a state, a type).
Filter = Annotated[FilterText | None, Query()]
#: The same POST with the same key makes one job; a different POST with it is a 409.
IdempotencyKey = Annotated[
    IdempotencyKeyText | None,
    Header(
        alias="Idempotency-Key",
        description="the same request with the same key makes one job; another request "
        "with it is a 409",
    ),
]
