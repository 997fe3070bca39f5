"""Annotated dependencies the routers share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from api.services import CloudServices


def services(request: Request) -> CloudServices:
    svc: CloudServices = request.app.state.services
    return svc


Services = Annotated[CloudServices, Depends(services)]
Limit = Annotated[int, Query(ge=1, le=500, description="rows per page")]
Cursor = Annotated[str | None, Query(description="continue after the last row of a previous page")]
PageNumber = Annotated[int | None, Query(ge=1, description="page number (when no cursor)")]
Consistent = Annotated[
    bool,
    Query(description="wait until the read model includes every write made before this request"),
]
