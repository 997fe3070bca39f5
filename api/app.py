"""The Stratus REST API: `/v1` routers per resource, OpenAPI at /docs."""

from __future__ import annotations

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routers import (
    events,
    infrastructure,
    inventory,
    jobs,
    simulator,
    snapshot_policies,
    snapshots,
    usage,
    virtual_machines,
    volumes,
)
from api.services import CloudServices

DESCRIPTION = """
Stratus is an IaaS control plane. Every operation is a job: a POST answers `202 Accepted` with
a `job_id` (the Temporal workflow id); follow it at `/v1/jobs/{job_id}` or in the Temporal web
UI. Authenticate with `X-API-Key: <key>` (or `Authorization: Bearer <key>`). Listings return
`{data, count, next_cursor}` and take `limit` with `cursor` (or `page`); `consistent=true` waits
until the read model includes every write made before the request.
"""


def create_app(services: CloudServices) -> FastAPI:
    app = FastAPI(title="Stratus", version="0.1.0", description=DESCRIPTION)
    app.state.services = services
    install_error_handlers(app)
    for module in (
        virtual_machines,
        jobs,
        volumes,
        inventory,
        simulator,
        usage,
        infrastructure,
        events,
        snapshots,
        snapshot_policies,
    ):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
