"""The Stratus REST API: `/v1` routers per resource, OpenAPI at /docs."""

from __future__ import annotations

from fastapi import FastAPI

from api import health, projection_admin
from api.admission import RequestAdmission
from api.cloudstack import endpoint as cloudstack_endpoint
from api.errors import UnforeseenErrors, install_error_handlers
from api.openapi_document import install_openapi_document
from api.rate_limit import limiter_from
from api.routers import (
    accounts,
    alerts,
    domains,
    events,
    host_ha,
    host_maintenance,
    infrastructure,
    inventory,
    jobs,
    out_of_band,
    simulator,
    snapshot_policies,
    snapshots,
    usage,
    virtual_machines,
    volumes,
)
from api.services import CloudServices
from api.settings import ApiSettings

DESCRIPTION = """
Stratus is an IaaS control plane. Every operation is a job: a POST answers `202 Accepted` with
a `job_id` (the Temporal workflow id); follow it at `/v1/jobs/{job_id}` or in the Temporal web
UI. Authenticate with `X-API-Key: <key>` (or `Authorization: Bearer <key>`). Listings return
`{data, count, next_cursor}` and take `limit` with `cursor` (or `page`); `consistent=true` waits
until the read model includes every write made before the request.

Every refusal has one shape, `{detail: [{loc, msg, type}], errorcode}`, with CloudStack's error
code; a request body is at most `STRATUS_MAX_REQUEST_BODY_BYTES` (1 MiB) and the API key is
checked before it is read.
"""


def create_app(services: CloudServices, settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    app = FastAPI(title="Stratus", version="0.1.0", description=DESCRIPTION)
    app.state.services = services
    install_error_handlers(app)
    # Added last, runs first: the net for the unforeseen wraps the admission, which wraps
    # FastAPI.
    app.state.rate_limiter = limiter_from(settings)
    app.add_middleware(
        RequestAdmission,
        services=services,
        max_body_bytes=settings.max_request_body_bytes,
        rate_limiter=app.state.rate_limiter,
    )
    app.add_middleware(UnforeseenErrors)
    install_openapi_document(app)
    for module in (
        virtual_machines,
        jobs,
        volumes,
        inventory,
        simulator,
        usage,
        infrastructure,
        host_maintenance,
        host_ha,
        out_of_band,
        events,
        alerts,
        snapshots,
        snapshot_policies,
        domains,
        accounts,
    ):
        app.include_router(module.router)

    # /healthz (the read models are kept, 503 otherwise), /livez; projections for operators.
    app.include_router(health.router)
    # /client/api: CloudStack's clients, signed requests, CloudStack's JSON.
    app.include_router(cloudstack_endpoint.router)
    app.include_router(projection_admin.router)
    return app
