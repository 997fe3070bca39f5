"""The async commands: each submits the job its `/v1` route submits, and answers the job id
to poll with queryAsyncJobResult (and listAsyncJobs), as CloudStack's clients expect.

A job's result, once it succeeded, is the resource as it is then (`{"virtualmachine": ...}`,
read through the `/v1` route once the read model has the job's last write); a resource the
job removed answers `{"success": true}`, as CloudStack's delete commands do.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from api.cloudstack import entities
from api.cloudstack.commands import Context, command
from api.cloudstack.entities import Names
from api.cloudstack.ha_commands import hostha_answer
from api.cloudstack.listings import names_of_items, owner_filter
from api.cloudstack.params import CloudStackError
from api.cloudstack.responses import JobStatus, async_job_result, async_response, list_response
from api.errors import ApiError
from api.job_routes import JobCall
from api.models import (
    JobPublic,
    PowerActionCreate,
    SnapshotCreate,
    SnapshotPolicyCreate,
    VirtualMachineChangeServiceOffering,
    VirtualMachineCreate,
    VirtualMachineDestroy,
    VirtualMachineMigrate,
    VirtualMachineStop,
    VolumeAttach,
    VolumeCreate,
    VolumeMigrate,
    VolumeResize,
)
from api.routers import snapshots, volumes
from api.routers.host_maintenance import cancel_host_maintenance, prepare_host_for_maintenance
from api.routers.inventory import get_host
from api.routers.jobs import get_job, list_jobs
from api.routers.out_of_band import issue_power_action
from api.routers.snapshot_policies import create_policy, list_policies
from api.routers.snapshots import create_snapshot, get_snapshot
from api.routers.virtual_machines import deploy_virtual_machine, get_virtual_machine
from api.routers.volumes import create_volume, get_volume
from api.vm_operation_routes import VM_OPERATIONS, submission_of
from domain.errors import ErrorCode
from domain.host_ha_operations import CONFIGURE_HA_JOB
from domain.job import JobStatus as StratusJobStatus
from domain.out_of_band import POWER_ACTION_JOB

M = TypeVar("M", bound=BaseModel)


def model_of(ctx: Context, model: type[M], fields: Mapping[str, tuple[str, Any]]) -> M:
    """The `/v1` body from CloudStack parameters ({field: (parameter, value)}); a refusal
    names the CloudStack parameter, not the `/v1` field."""
    given = {name: value for name, (_, value) in fields.items() if value is not None}
    try:
        return model.model_validate(given)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        parameter = fields.get(field, (field, None))[0]
        raise ctx.params.invalid(parameter, str(given.get(field, "")), first["msg"]) from None


async def job_call(ctx: Context, ids: dict[str, UUID], body: Any) -> JobCall[Any]:
    return JobCall(
        ids=ids,
        body=body,
        caller=ctx.caller,
        services=ctx.services,
        response=ctx.response,
        idempotency_key=None,
    )


async def vm_operation(ctx: Context, name: str, body: Any = None) -> dict[str, Any]:
    route = next(r for r in VM_OPERATIONS if r.name == name)
    vm_id = ctx.params.required_uuid("id")
    if body is None and route.body is not None:
        body = route.body()
    accepted = await submission_of(route)(await job_call(ctx, {"vm_id": vm_id}, body))
    return async_response(ctx.command, str(accepted.job_id), str(vm_id))


async def volume_operation(
    ctx: Context, name: str, volume_id: UUID, body: Any = None
) -> dict[str, Any]:
    route = next(r for r in volumes.OPERATIONS if r.name == name)
    call = await job_call(ctx, {"volume_id": volume_id}, body)
    accepted = await volumes.submission_of(route)(call)
    return async_response(ctx.command, str(accepted.job_id), str(volume_id))


async def snapshot_operation(ctx: Context, name: str) -> dict[str, Any]:
    route = next(r for r in snapshots.OPERATIONS if r.name == name)
    snapshot_id = ctx.params.required_uuid("id")
    call = await job_call(ctx, {"snapshot_id": snapshot_id}, None)
    accepted: Any = await snapshots.submission_of(route)(call)
    return async_response(ctx.command, str(accepted.job_id), str(snapshot_id))


@command("deployVirtualMachine", is_async=True)
async def deploy(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    networks = (p.text("networkids") or "").split(",")
    on_behalf = await owner_filter(ctx) if p.text("account") is not None else None
    body = model_of(
        ctx,
        VirtualMachineCreate,
        {
            "zone_id": ("zoneid", p.required("zoneid")),
            "service_offering_id": ("serviceofferingid", p.required("serviceofferingid")),
            "template_id": ("templateid", p.required("templateid")),
            "network_id": ("networkids", networks[0] or None),
            "name": ("name", p.text("name")),
            "display_name": ("displayname", p.text("displayname")),
            "root_disk_size_gib": ("rootdisksize", p.text("rootdisksize")),
            "account_id": ("account", on_behalf),
        },
    )
    accepted = await deploy_virtual_machine(body, ctx.caller, ctx.services, ctx.response, None)
    return async_response(ctx.command, str(accepted.job_id), str(accepted.virtual_machine_id))


@command("startVirtualMachine", is_async=True)
async def start(ctx: Context) -> dict[str, Any]:
    return await vm_operation(ctx, "start_virtual_machine")


@command("stopVirtualMachine", is_async=True)
async def stop(ctx: Context) -> dict[str, Any]:
    body = VirtualMachineStop(forced=ctx.params.flag("forced"))
    return await vm_operation(ctx, "stop_virtual_machine", body)


@command("rebootVirtualMachine", is_async=True)
async def reboot(ctx: Context) -> dict[str, Any]:
    return await vm_operation(ctx, "reboot_virtual_machine")


@command("destroyVirtualMachine", is_async=True)
async def destroy(ctx: Context) -> dict[str, Any]:
    body = VirtualMachineDestroy(expunge=ctx.params.flag("expunge"))
    return await vm_operation(ctx, "destroy_virtual_machine", body)


@command("recoverVirtualMachine", is_async=True)
async def recover(ctx: Context) -> dict[str, Any]:
    return await vm_operation(ctx, "recover_virtual_machine")


@command("expungeVirtualMachine", is_async=True)
async def expunge(ctx: Context) -> dict[str, Any]:
    return await vm_operation(ctx, "expunge_virtual_machine")


@command("migrateVirtualMachine", is_async=True)
async def migrate(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    if p.text("storageid") is not None:
        raise CloudStackError(
            int(ErrorCode.UNSUPPORTED_ACTION),
            "migrating a VM's storage is not offered yet; give hostid to move it within its "
            "cluster",
        )
    body = model_of(ctx, VirtualMachineMigrate, {"host_id": ("hostid", p.text("hostid"))})
    p.values["id"] = p.required("virtualmachineid")
    return await vm_operation(ctx, "migrate_virtual_machine", body)


@command("migrateVirtualMachineWithVolume", is_async=True)
async def migrate_with_volume(ctx: Context) -> dict[str, Any]:
    """To a host of another cluster, the disks moving to that cluster's pools (Stratus chooses
    them: an explicit `migrateto` volume-to-pool map is refused rather than ignored)."""
    p = ctx.params
    if any(name.lower().startswith("migrateto") for name in p.values):
        raise CloudStackError(
            int(ErrorCode.UNSUPPORTED_ACTION),
            "migrateto (a pool per volume) is not offered yet; give hostid alone and the "
            "target cluster's pools are chosen",
        )
    body = model_of(ctx, VirtualMachineMigrate, {"host_id": ("hostid", p.required("hostid"))})
    p.values["id"] = p.required("virtualmachineid")
    return await vm_operation(ctx, "migrate_virtual_machine", body)


@command("scaleVirtualMachine", is_async=True)
async def scale(ctx: Context) -> dict[str, Any]:
    return await _change_offering(ctx)


@command("changeServiceForVirtualMachine", is_async=True)
async def change_service(ctx: Context) -> dict[str, Any]:
    return await _change_offering(ctx)


async def _change_offering(ctx: Context) -> dict[str, Any]:
    body = model_of(
        ctx,
        VirtualMachineChangeServiceOffering,
        {"service_offering_id": ("serviceofferingid", ctx.params.required("serviceofferingid"))},
    )
    return await vm_operation(ctx, "change_service_offering", body)


@command("createVolume", is_async=True)
async def create_volume_command(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    if p.text("snapshotid") is not None:
        snapshot_id = p.required_uuid("snapshotid")
        route = next(r for r in snapshots.OPERATIONS if r.name == "create_volume_from_snapshot")
        body = model_of(ctx, route.body or BaseModel, {"name": ("name", p.required("name"))})
        call = await job_call(ctx, {"snapshot_id": snapshot_id}, body)
        made: Any = await snapshots.submission_of(route)(call)
        return async_response(ctx.command, str(made.job_id), str(made.volume_id))
    body = model_of(
        ctx,
        VolumeCreate,
        {
            "zone_id": ("zoneid", p.required("zoneid")),
            "disk_offering_id": ("diskofferingid", p.required("diskofferingid")),
            "name": ("name", p.required("name")),
            "size_gib": ("size", p.text("size")),
        },
    )
    accepted = await create_volume(body, ctx.caller, ctx.services, ctx.response, None)
    return async_response(ctx.command, str(accepted.job_id), str(accepted.volume_id))


@command("attachVolume", is_async=True)
async def attach(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    body = model_of(
        ctx, VolumeAttach, {"vm_id": ("virtualmachineid", p.required("virtualmachineid"))}
    )
    return await volume_operation(ctx, "attach_volume", p.required_uuid("id"), body)


@command("detachVolume", is_async=True)
async def detach(ctx: Context) -> dict[str, Any]:
    return await volume_operation(ctx, "detach_volume", ctx.params.required_uuid("id"))


@command("resizeVolume", is_async=True)
async def resize(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    body = model_of(
        ctx,
        VolumeResize,
        {"size_gib": ("size", p.required("size")), "shrink_ok": ("shrinkok", p.flag("shrinkok"))},
    )
    return await volume_operation(ctx, "resize_volume", p.required_uuid("id"), body)


@command("migrateVolume", is_async=True)
async def migrate_volume(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    body = model_of(ctx, VolumeMigrate, {"pool_id": ("storageid", p.required("storageid"))})
    return await volume_operation(ctx, "migrate_volume", p.required_uuid("volumeid"), body)


@command("deleteVolume", is_async=True)
async def delete_volume(ctx: Context) -> dict[str, Any]:
    return await volume_operation(ctx, "delete_volume", ctx.params.required_uuid("id"))


@command("createSnapshot", is_async=True)
async def create_snapshot_command(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    body = model_of(ctx, SnapshotCreate, {"name": ("name", p.text("name"))})
    accepted = await create_snapshot(
        p.required_uuid("volumeid"), ctx.caller, ctx.services, ctx.response, body, None
    )
    return async_response(ctx.command, str(accepted.job_id), str(accepted.snapshot_id))


@command("deleteSnapshot", is_async=True)
async def delete_snapshot(ctx: Context) -> dict[str, Any]:
    return await snapshot_operation(ctx, "delete_snapshot")


@command("revertSnapshot", is_async=True)
async def revert_snapshot(ctx: Context) -> dict[str, Any]:
    return await snapshot_operation(ctx, "revert_snapshot")


@command("createSnapshotPolicy", is_async=True)
async def create_snapshot_policy(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    body = model_of(
        ctx,
        SnapshotPolicyCreate,
        {
            "volume_id": ("volumeid", p.required("volumeid")),
            "interval_type": ("intervaltype", (p.required("intervaltype")).upper()),
            "schedule": ("schedule", p.required("schedule")),
            "timezone": ("timezone", p.text("timezone")),
            "max_snaps": ("maxsnaps", p.required("maxsnaps")),
        },
    )
    accepted = await create_policy(body, ctx.caller, ctx.services, ctx.response, None)
    return async_response(ctx.command, str(accepted.job_id), str(accepted.snapshot_policy_id))


@command("listSnapshotPolicies")
async def list_snapshot_policies(ctx: Context) -> dict[str, Any]:
    page, size = ctx.params.page()
    found = await list_policies(
        ctx.caller,
        ctx.services,
        ctx.response,
        volume_id=ctx.params.uuid("volumeid"),
        account_id=None,
        include_deleted=False,
        limit=size,
        cursor=None,
        page=page,
        consistent=False,
    )
    rows = [
        {
            "id": str(policy.id),
            "volumeid": str(policy.volume_id),
            "intervaltype": policy.interval_type,
            "schedule": policy.schedule,
            "timezone": policy.timezone,
            "maxsnaps": policy.max_snaps,
        }
        for policy in found.data
    ]
    return list_response(ctx.command, "snapshotpolicy", rows, found.count)


# -- hosts ------------------------------------------------------------------------------------
def _root_admin_only(ctx: Context) -> None:
    if not ctx.caller.is_admin:
        raise CloudStackError(int(ErrorCode.ACCOUNT_ERROR), f"{ctx.command} is for the root admin")


@command("prepareHostForMaintenance", is_async=True)
async def prepare_for_maintenance(ctx: Context) -> dict[str, Any]:
    _root_admin_only(ctx)
    host_id = ctx.params.required_uuid("id")
    accepted = await prepare_host_for_maintenance(host_id, ctx.caller, ctx.services, ctx.response)
    return async_response(ctx.command, str(accepted.job_id), str(host_id))


@command("cancelHostMaintenance", is_async=True)
async def cancel_maintenance(ctx: Context) -> dict[str, Any]:
    _root_admin_only(ctx)
    host_id = ctx.params.required_uuid("id")
    accepted = await cancel_host_maintenance(host_id, ctx.caller, ctx.services, ctx.response)
    return async_response(ctx.command, str(accepted.job_id), str(host_id))


@command("issueOutOfBandManagementPowerAction", is_async=True)
async def issue_power_action_command(ctx: Context) -> dict[str, Any]:
    _root_admin_only(ctx)
    host_id = ctx.params.required_uuid("hostid")
    body = model_of(ctx, PowerActionCreate, {"action": ("action", ctx.params.required("action"))})
    accepted = await issue_power_action(host_id, body, ctx.caller, ctx.services, ctx.response)
    return async_response(ctx.command, str(accepted.job_id), str(host_id))


def _power_answer(job: JobPublic) -> dict[str, Any]:
    """issueOutOfBandManagementPowerAction's result, as CloudStack answers it."""
    result = job.result or {}
    return {
        "outofbandmanagement": {
            "hostid": result.get("host_id"),
            "action": result.get("action"),
            "powerstate": result.get("power_state"),
            "status": True,
            "description": f"power {result.get('action')}: the BMC reports "
            f"{result.get('power_state')}",
        }
    }


def _host_now(host_id: UUID, caller: Any, services: Any, response: Any, consistent: bool) -> Any:
    if consistent:
        services.reads.wait_until_current("host_capacity", services.consistency_timeout)
    return get_host(host_id, caller, services)


# -- async jobs ---------------------------------------------------------------------------
@command("queryAsyncJobResult")
async def query_async_job_result(ctx: Context) -> dict[str, Any]:
    job_id = ctx.params.required_uuid("jobid")
    try:
        job = await get_job(job_id, ctx.caller, ctx.services, ctx.response, consistent=False)
    except ApiError as error:
        if error.status == 404:
            raise CloudStackError(
                int(ErrorCode.PARAM_ERROR), f"Unable to find a job with id {job_id}"
            ) from None
        raise
    return await job_answer(ctx, job)


async def job_answer(ctx: Context, job: JobPublic) -> dict[str, Any]:
    status = JobStatus(job.jobstatus)
    instance_type, instance_id = entities.async_job_subject(job)
    common: dict[str, Any] = {
        "job_id": str(job.id),
        "status": status,
        "cmd": job.job_type,
        "user_id": str(ctx.caller.user_id or ctx.caller.account_id),
        "account_id": str(job.account_id or ctx.caller.account_id),
        "created": job.created or datetime.now(UTC),
        "instance_type": instance_type,
        "instance_id": instance_id,
    }
    if status is JobStatus.PENDING:
        return async_job_result(**common)
    completed = job.completed or datetime.now(UTC)
    if status is JobStatus.SUCCEEDED:
        result = await result_of(ctx, job)
        return async_job_result(**common, completed=completed, result=result)
    code = job.error_code or int(ErrorCode.INTERNAL_ERROR)
    text = job.error_text or ("the job was cancelled" if status is JobStatus.CANCELLED else "")
    return async_job_result(**common, completed=completed, error=(code, text))


async def result_of(ctx: Context, job: JobPublic) -> dict[str, Any]:
    """The resource the job made or acted on, as it is now (the read model waited for)."""
    if job.job_type == POWER_ACTION_JOB:
        return _power_answer(job)
    if job.job_type == CONFIGURE_HA_JOB and job.resource_type == "Host":
        return await hostha_answer(ctx, job)
    kinds: dict[str, tuple[Any, str, Any]] = {
        "VirtualMachine": (get_virtual_machine, "virtualmachine", entities.virtual_machine),
        "Volume": (get_volume, "volume", entities.volume),
        "Snapshot": (get_snapshot, "snapshot", entities.snapshot),
        "Host": (_host_now, "host", entities.host),
    }
    found = kinds.get(job.resource_type or "")
    if found is None or job.resource_id is None:
        return {"success": True}
    fetch, entity, render = found
    try:
        item = await run_in_threadpool(
            fetch, job.resource_id, ctx.caller, ctx.services, ctx.response, True
        )
    except ApiError as error:
        if error.status == 404:
            return {"success": True}
        raise
    if getattr(item, "removed", None) is not None:
        return {"success": True}
    names: Names = await names_of_items(ctx, [item])
    return {entity: render(item, names)}


@command("listAsyncJobs")
async def list_async_jobs(ctx: Context) -> dict[str, Any]:
    page, size = ctx.params.page()
    found = await run_in_threadpool(
        list_jobs,
        ctx.caller,
        ctx.services,
        ctx.response,
        status=None,
        job_type=None,
        resource_id=None,
        account_id=await owner_filter(ctx),
        limit=size,
        cursor=None,
        page=page,
        consistent=False,
    )
    rows = []
    for job in found.data:
        instance_type, instance_id = entities.async_job_subject(job)
        status = StratusJobStatus(job.status)
        rows.append(
            {
                key: value
                for key, value in {
                    "jobid": str(job.id),
                    "cmd": job.job_type,
                    "jobstatus": status.cloudstack_jobstatus,
                    "jobprocstatus": 0,
                    "jobresultcode": job.error_code or 0,
                    "jobinstancetype": instance_type,
                    "jobinstanceid": instance_id,
                    "accountid": str(job.account_id) if job.account_id else None,
                    "created": entities.cloudstack_date(job.created) if job.created else None,
                }.items()
                if value is not None
            }
        )
    return list_response(ctx.command, "asyncjobs", rows, found.count)
