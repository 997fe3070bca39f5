"""/v1/virtual-machines: deploy (a job) and list (the read model)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response, status
from starlette.concurrency import run_in_threadpool

from api.auth import CurrentCaller
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import ApiError, forbidden, not_found
from api.job_submission import JobSubmission, fingerprint, job_id_for, submit
from api.models import JobAccepted, Listing, VirtualMachineCreate, VirtualMachinePublic
from api.reads import consistent_read, scoped_account
from domain.deployment import (
    JOB_TYPE,
    ValidatedDeployment,
    validate_deployment,
    virtual_machine_id_for,
)
from domain.errors import ErrorCode
from domain.job_requests import DeploymentOrder, DeployVirtualMachineRequest, JobAttribute
from domain.zone import Zone

router = APIRouter(prefix="/v1/virtual-machines", tags=["virtual machines"])
TABLE = "virtual_machines"


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    summary="Deploy a virtual machine (a job)",
)
async def deploy_virtual_machine(
    body: VirtualMachineCreate,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobAccepted:
    account_id = body.account_id or caller.account_id
    if account_id != caller.account_id and not caller.is_admin:
        raise forbidden("only administrators deploy on behalf of another account")
    job_id = job_id_for(caller, idempotency_key)
    network_id = body.network_id
    if network_id is None:
        network_id = await run_in_threadpool(_default_network, services, body.zone_id)
    name = body.name or f"vm-{job_id.hex[:8]}"
    order = DeploymentOrder(
        account_id=account_id,
        zone_id=body.zone_id,
        service_offering_id=body.service_offering_id,
        template_id=body.template_id,
        network_id=network_id,
        name=name,
        display_name=body.display_name or name,
        root_disk_size_gib=body.root_disk_size_gib,
    )
    validated: ValidatedDeployment = await run_in_threadpool(
        validate_deployment, services.cloud, order
    )
    vm_id = virtual_machine_id_for(job_id)
    summary = (
        f"Deploy VM {name} ({validated.offering_name}, {validated.cpu_count} vCPU, "
        f"{validated.memory_mib} MiB) in zone {validated.zone_name}"
    )
    await submit(
        services,
        JobSubmission(
            workflow=JOB_TYPE,
            request=DeployVirtualMachineRequest(job_id=job_id, order=order, summary=summary),
            job_id=job_id,
            attributes={
                JobAttribute.JOB_TYPE: JOB_TYPE,
                JobAttribute.JOB_STATE: "queued",
                JobAttribute.ACCOUNT_ID: str(account_id),
                JobAttribute.RESOURCE_TYPE: "VirtualMachine",
                JobAttribute.RESOURCE_ID: str(vm_id),
                JobAttribute.ZONE_ID: str(body.zone_id),
            },
            summary=summary,
            details=_details(order, vm_id, validated),
            fingerprint=fingerprint(body),
        ),
        idempotent=idempotency_key is not None,
    )
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobAccepted(
        job_id=job_id,
        virtual_machine_id=vm_id,
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )


@router.get("", response_model=Listing[VirtualMachinePublic], summary="List virtual machines")
def list_virtual_machines(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    zone_id: UUID | None = None,
    state: str | None = None,
    account_id: UUID | None = None,
    host_id: UUID | None = Query(default=None, description="admins only"),
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[VirtualMachinePublic]:
    consistent_read(services, TABLE, consistent, response)
    if host_id is not None and not caller.is_admin:
        raise forbidden("filtering by host is for administrators")
    filters = {
        "zone_id": zone_id,
        "state": state,
        "account_id": scoped_account(caller, account_id),
        "host_id": host_id,
    }
    found = services.reads.page(TABLE, filters, limit=limit, cursor=cursor, page=page)
    return Listing[VirtualMachinePublic](
        data=[VirtualMachinePublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{vm_id}", response_model=VirtualMachinePublic, summary="Show a virtual machine")
def get_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> VirtualMachinePublic:
    consistent_read(services, TABLE, consistent, response)
    row = services.reads.get(TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    return VirtualMachinePublic(**row)


def _default_network(services: Services, zone_id: UUID) -> UUID:
    zone = services.cloud.find(Zone, zone_id)
    if zone is None:
        raise ApiError(
            422,
            f"no zone with id {zone_id}",
            code=ErrorCode.PARAM_ERROR,
            loc=("body", "zone_id"),
            kind="not_found",
        )
    if not zone.network_ids:
        raise ApiError(
            422,
            f"zone {zone.name} has no guest network; pass network_id",
            code=ErrorCode.PARAM_ERROR,
            loc=("body", "network_id"),
            kind="missing",
        )
    return zone.network_ids[0]


def _details(order: DeploymentOrder, vm_id: UUID, validated: ValidatedDeployment) -> str:
    return "\n".join(
        [
            f"**VM:** {order.name} (`{vm_id}`)",
            f"**Account:** `{order.account_id}`",
            f"**Zone:** {validated.zone_name} (`{order.zone_id}`)",
            f"**Offering:** {validated.offering_name} (`{order.service_offering_id}`)",
            f"**Template:** `{order.template_id}` ({validated.hypervisor})",
            f"**Network:** `{order.network_id}`",
            f"**Root disk:** {validated.root_disk_bytes / 1024**3:.1f} GiB",
        ]
    )
