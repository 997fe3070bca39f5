"""/v1/projections: the read models' projections as an operator mends them (admin only).

`GET` shows each projection's state and lag (as `/healthz` does). A projection blocked on an
event it cannot write is mended without SQL: `POST .../skips` records, with the caller's name and
a reason, that it skips the event it is blocked on (`projections.skips`: durable, audited,
listed by `GET .../skips`, applied and logged by the projector at its next attempt);
`POST .../retry` asks for an attempt now rather than after the backoff.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.auth import AdminCaller, Caller
from api.dependencies import Services
from api.errors import ApiError, not_found
from api.health import ProjectionHealthPublic
from domain.errors import ErrorCode
from domain.text import DOCUMENTED, STORABLE
from projections.skips import MendRefused, RetryRequest, Skip, record_skip, request_retry, skips
from projections.store import TOPICS_OF_PROJECTION

router = APIRouter(prefix="/v1/projections", tags=["projections"])

#: Notification ids are PostgreSQL bigints.
#: JSON numbers are exact up to 2**53 (schema tools and many clients read them as doubles).
MAX_NOTIFICATION_ID = 2**53

ProjectionName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern="^[a-z_]+$",
        description="a projection's name, as `GET /v1/projections` lists them",
    ),
]
#: Why an operator skips an event: kept in the audit trail for ever.
Reason = Annotated[str, StringConstraints(min_length=3, max_length=500), STORABLE, DOCUMENTED]


class SkipCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notification_id: int = Field(
        ge=1, le=MAX_NOTIFICATION_ID, description="the event the projection is blocked on"
    )
    reason: Reason = Field(description="why it may be skipped (kept in the audit trail)")


class SkipPublic(BaseModel):
    projection: str
    notification_id: int
    event_topic: str | None
    event_originator_id: str | None
    error: str | None = Field(description="the error the projection was blocked with")
    reason: str
    skipped_by_account_id: UUID | None
    skipped_by: str = Field(description="the administrator who recorded the skip")
    skipped_at: datetime
    applied_at: datetime | None = Field(
        description="when a projector first moved the projection past the event (null: not yet)"
    )

    @classmethod
    def of(cls, skip: Skip) -> SkipPublic:
        return cls(**vars(skip))


class SkipsPublic(BaseModel):
    data: list[SkipPublic]
    count: int


class ProjectionsPublic(BaseModel):
    data: list[ProjectionHealthPublic]
    count: int


class RetryRequestPublic(BaseModel):
    projection: str
    requested_by_account_id: UUID | None
    requested_by: str
    requested_at: datetime

    @classmethod
    def of(cls, request: RetryRequest) -> RetryRequestPublic:
        return cls(**vars(request))


def _known(projection: str) -> str:
    if projection not in TOPICS_OF_PROJECTION:
        raise not_found(f"projection {projection}", ("path", "projection"))
    return projection


def _refused(refusal: MendRefused) -> ApiError:
    return ApiError(409, str(refusal), code=ErrorCode.PARAM_ERROR, kind="conflict")


def _who(caller: Caller) -> str:
    return f"{caller.name} ({caller.account_id})"


@router.get("", response_model=ProjectionsPublic, summary="Every projection's state and lag")
def list_projections(services: Services, _: AdminCaller) -> ProjectionsPublic:
    data = [ProjectionHealthPublic.of(h) for h in services.reads.projection_health()]
    return ProjectionsPublic(data=data, count=len(data))


@router.get(
    "/{projection}", response_model=ProjectionHealthPublic, summary="One projection's state"
)
def get_projection(
    projection: ProjectionName, services: Services, _: AdminCaller
) -> ProjectionHealthPublic:
    name = _known(projection)
    (health,) = [h for h in services.reads.projection_health() if h.projection == name]
    return ProjectionHealthPublic.of(health)


@router.post(
    "/{projection}/skips",
    response_model=SkipPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Skip the event a projection is blocked on",
    responses={409: {"description": "The projection is not blocked on that event"}},
)
def create_skip(
    projection: ProjectionName, body: SkipCreate, services: Services, caller: AdminCaller
) -> SkipPublic:
    """Records, for good, that the projection moves past the event it is blocked on without
    writing it; the projector applies it at once and logs it. Refused unless a running
    projector reports the projection blocked on exactly that event."""
    name = _known(projection)
    try:
        with services.reads.pool.connection() as conn:
            skip = record_skip(
                conn,
                name,
                body.notification_id,
                reason=body.reason,
                by_account_id=caller.account_id,
                by=_who(caller),
            )
    except MendRefused as refusal:
        raise _refused(refusal) from None
    return SkipPublic.of(skip)


@router.get(
    "/{projection}/skips", response_model=SkipsPublic, summary="The skips recorded (audit trail)"
)
def list_skips(projection: ProjectionName, services: Services, _: AdminCaller) -> SkipsPublic:
    name = _known(projection)
    with services.reads.pool.connection() as conn:
        data = [SkipPublic.of(s) for s in skips(conn, name)]
    return SkipsPublic(data=data, count=len(data))


@router.post(
    "/{projection}/retry",
    response_model=RetryRequestPublic,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Try a blocked projection again now",
    responses={409: {"description": "No projector has run against this database yet"}},
)
def retry(
    projection: ProjectionName, services: Services, caller: AdminCaller
) -> RetryRequestPublic:
    """Asks the projectors to retry now instead of after the backoff (say, once what blocked
    it was mended); they do at their next check, about a second later."""
    name = _known(projection)
    try:
        with services.reads.pool.connection() as conn:
            request = request_retry(conn, name, by_account_id=caller.account_id, by=_who(caller))
    except MendRefused as refusal:
        raise _refused(refusal) from None
    return RetryRequestPublic.of(request)
