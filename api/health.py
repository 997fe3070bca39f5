"""Health: `/livez` (the process answers) and `/healthz` (the read models are being kept).

The API and the projector may be separate processes, so `/healthz` learns each projection's
state from the projectors' heartbeat rows in the database (`projections.status`): one small
query per call, cheap enough to poll. It answers 503 while any projection is retrying (blocked
on an event, or unable to start) or stopped (no projector reports it): the API then still
accepts jobs, but listings may be stale. Point a liveness probe at `/livez`, which only says
the process serves requests; a stuck read model is a reason to page an operator, not to
restart or take out of rotation an API that takes jobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.dependencies import Services
from projections.status import BlockingEvent, ProjectionHealth, ProjectionState

router = APIRouter(tags=["health"])


class BlockingEventPublic(BaseModel):
    notification_id: int = Field(description="the event's position in the event store")
    topic: str | None = Field(description="the event's class (module:Qualname)")
    originator_id: str | None = Field(description="the aggregate the event belongs to")

    @classmethod
    def of(cls, event: BlockingEvent | None) -> BlockingEventPublic | None:
        if event is None:
            return None
        return cls(
            notification_id=event.notification_id,
            topic=event.topic,
            originator_id=event.originator_id,
        )


class ProjectionHealthPublic(BaseModel):
    projection: str
    state: ProjectionState = Field(
        description="running; retrying (blocked on `blocking_event`, or unable to start, and "
        "tried again with capped exponential backoff); stopped (no projector reports it)"
    )
    detail: str = Field(description="the state in one sentence")
    position: int | None = Field(description="the last event it wrote (notification id)")
    head: int | None = Field(description="the last event of its topics in the event store")
    behind: int | None = Field(description="notification ids between `position` and `head`")
    seconds_behind: float | None = Field(
        description="how long ago its projector first saw an event it has not written yet "
        "(0 when up to date)"
    )
    blocking_event: BlockingEventPublic | None = Field(description="the event it cannot get past")
    error: str | None = Field(description="why it cannot")
    attempts: int = Field(description="attempts at the blocking event so far")
    failing_since: datetime | None
    next_attempt_at: datetime | None
    projector: str | None = Field(description="the projector reporting it (host:pid:id)")
    heartbeat_at: datetime | None = Field(description="when that projector last reported")

    @classmethod
    def of(cls, health: ProjectionHealth) -> ProjectionHealthPublic:
        return cls(
            projection=health.projection,
            state=health.state,
            detail=health.detail,
            position=health.position,
            head=health.head,
            behind=health.behind,
            seconds_behind=health.seconds_behind,
            blocking_event=BlockingEventPublic.of(health.blocking_event),
            error=health.error,
            attempts=health.attempts,
            failing_since=health.failing_since,
            next_attempt_at=health.next_attempt_at,
            projector=health.projector,
            heartbeat_at=health.heartbeat_at,
        )


class Health(BaseModel):
    status: Literal["ok", "failing"] = Field(
        description="ok when every projection is running (answered with 200), else failing (503)"
    )
    projections: list[ProjectionHealthPublic]


class Liveness(BaseModel):
    status: Literal["ok"]


@router.get(
    "/healthz",
    summary="Readiness: every read model is being kept",
    response_model=Health,
    responses={
        503: {
            "model": Health,
            "description": "A projection is retrying (blocked on an event it cannot write, or "
            "unable to start) or stopped (no projector reports it); the body says which, on "
            "which event and why",
        }
    },
)
def healthz(services: Services, response: Response) -> Health:
    projections = [ProjectionHealthPublic.of(h) for h in services.reads.projection_health()]
    healthy = all(p.state is ProjectionState.RUNNING for p in projections)
    if not healthy:
        response.status_code = 503
    return Health(status="ok" if healthy else "failing", projections=projections)


@router.get("/livez", summary="Liveness: the API process serves requests", response_model=Liveness)
def livez() -> Liveness:
    return Liveness(status="ok")
