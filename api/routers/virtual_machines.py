"""/v1/virtual-machines: deploy (a job), list and show (the read model), the VM's snapshots and
queue, and the operations on a VM, each a job in the VM's queue, registered from the table of
api/vm_operation_routes.py."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Query, Response, status
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CurrentCaller
from api.dependencies import Consistent, Cursor, IdempotencyKey, Limit, PageNumber, Services
from api.errors import ApiError, forbidden, not_found
from api.job_routes import add_job_route
from api.job_submission import (
    fingerprint,
    job_id_for,
    queue_listing,
    queued_jobs,
    submit_to_queue,
)
from api.models import (
    JobAccepted,
    Listing,
    VirtualMachineAdminPublic,
    VirtualMachineCreate,
    VirtualMachinePublic,
    VmJobPublic,
    VmSnapshotPublic,
)
from api.reads import consistent_read, scoped_account
from api.resource_usage import check_account_limits, deployment_resources
from api.vm_operation_routes import (
    VM_OPERATIONS,
    VM_SNAPSHOTS_TABLE,
    VM_TABLE,
    submission_of,
    vm_job_accepted,
)
from domain.deployment import (
    JOB_TYPE,
    ValidatedDeployment,
    validate_deployment,
    virtual_machine_id_for,
)
from domain.errors import ErrorCode
from domain.job_requests import (
    DeploymentOrder,
    DeployVirtualMachineRequest,
    JobQueue,
    VmJobSubmission,
    vm_queue_id,
)
from domain.virtual_machine import VmState
from domain.vm_snapshot import VmSnapshotState
from domain.zone import Zone

router = APIRouter(prefix="/v1/virtual-machines", tags=["virtual machines"])
TABLE = VM_TABLE


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
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    account_id = body.account_id or caller.account_id
    if not caller.may_see(account_id):
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
    await run_in_threadpool(
        check_account_limits, services, account_id, deployment_resources(validated)
    )
    vm_id = virtual_machine_id_for(job_id)
    summary = (
        f"Deploy VM {name} ({validated.offering_name}, {validated.cpu_count} vCPU, "
        f"{validated.memory_mib} MiB) in zone {validated.zone_name}"
    )
    # The deployment runs in the VM's queue, so an operation submitted meanwhile waits for it.
    await submit_to_queue(
        services,
        JobQueue.of_vm(vm_id, account_id, body.zone_id),
        VmJobSubmission(
            job_id=job_id,
            job_type=JOB_TYPE,
            account_id=account_id,
            zone_id=body.zone_id,
            summary=summary,
            details=_details(order, vm_id, validated),
            fingerprint=fingerprint(body),
            deployment=DeployVirtualMachineRequest(
                job_id=job_id, order=order, summary=summary, waits_for_turn=True
            ),
        ),
    )
    return vm_job_accepted(services, response, job_id, vm_id)


def vm_view(caller: Caller, row: dict[str, Any]) -> VirtualMachinePublic:
    """The VM as the caller may see it: with its hosts for administrators only (CloudStack
    shows hostid to admins)."""
    if caller.is_admin:
        return VirtualMachineAdminPublic(**row)
    return VirtualMachinePublic(**row)


VmListing = Listing[VirtualMachineAdminPublic] | Listing[VirtualMachinePublic]
VmView = VirtualMachineAdminPublic | VirtualMachinePublic


@router.get(
    "",
    response_model=VmListing,
    summary="List virtual machines (administrators also see their hosts)",
)
def list_virtual_machines(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    zone_id: UUID | None = None,
    state: VmState | None = None,
    account_id: UUID | None = None,
    host_id: UUID | None = Query(default=None, description="admins only"),
    include_removed: bool = Query(default=False, description="also list expunged VMs"),
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> VmListing:
    consistent_read(services, TABLE, consistent, response)
    if host_id is not None and not caller.is_admin:
        raise forbidden("filtering by host is for administrators")
    filters = {
        "zone_id": zone_id,
        "state": state,
        "account_id": scoped_account(caller, account_id),
        "host_id": host_id,
        "is_removed": None if include_removed else False,
    }
    found = services.reads.page(TABLE, filters, limit=limit, cursor=cursor, page=page)
    if caller.is_admin:
        return Listing[VirtualMachineAdminPublic](
            data=[VirtualMachineAdminPublic(**row) for row in found.data],
            count=found.count,
            next_cursor=found.next_cursor,
        )
    return Listing[VirtualMachinePublic](
        data=[VirtualMachinePublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{vm_id}", response_model=VmView, summary="Show a virtual machine")
def get_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> VmView:
    consistent_read(services, TABLE, consistent, response)
    row = services.reads.get(TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    return vm_view(caller, row)


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


# -- operations on a VM: each a job in the VM's queue (api/vm_operation_routes.py) -----------
for _route in VM_OPERATIONS:
    add_job_route(router, _route, submission_of(_route), accepted=JobAccepted)


@router.get(
    "/{vm_id}/snapshots",
    response_model=Listing[VmSnapshotPublic],
    summary="The VM's snapshots (listVMSnapshot)",
)
def list_vm_snapshots(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    state: VmSnapshotState | None = None,
    include_removed: bool = Query(default=False, description="also list deleted snapshots"),
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[VmSnapshotPublic]:
    consistent_read(services, VM_SNAPSHOTS_TABLE, consistent, response)
    row = services.reads.get(TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    filters = {
        "vm_id": vm_id,
        "state": state,
        "is_removed": None if include_removed else False,
    }
    found = services.reads.page(VM_SNAPSHOTS_TABLE, filters, limit=limit, cursor=cursor, page=page)
    return Listing[VmSnapshotPublic](
        data=[VmSnapshotPublic(**r) for r in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get(
    "/{vm_id}/jobs",
    response_model=Listing[VmJobPublic],
    summary="The VM's running job and its queued jobs, in the order they run",
)
async def list_virtual_machine_jobs(
    vm_id: UUID, caller: CurrentCaller, services: Services
) -> Listing[VmJobPublic]:
    row = await run_in_threadpool(services.reads.get, TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    return queue_listing(await queued_jobs(services, vm_queue_id(vm_id)))
