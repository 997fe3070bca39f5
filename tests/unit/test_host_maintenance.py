"""The host's resource states (CloudStack's ResourceState machine) as maintenance and allocation
changes move it, on the in-memory event store: which moves are allowed, which are no-ops, and
what a host in each state takes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from domain import inventory
from domain.cloud import Cloud
from domain.errors import IllegalStateTransition, InvalidParameter, NotFound
from domain.host import Host, ResourceState
from domain.host_maintenance import (
    REASONS_IN_ERROR_TEXT,
    AllocationStateRequest,
    CancelHostMaintenanceRequest,
    HostMaintenanceRequest,
    begin_cancel,
    begin_maintenance,
    change_allocation_state,
    evacuation_job_id,
    evacuation_of,
    finish_cancel,
    maintenance_error_text,
    unassign_stopped_vms,
    vms_to_move,
)
from domain.job import Job, JobStatus
from domain.virtual_machine import VmEvent, VmState
from domain.vm_requests import MigrateVmRequest
from tests.unit.builders import bring_to, new_host, new_vm, seed_pod

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def test_prepare_then_maintenance_only_once_the_host_holds_no_vm() -> None:
    host, job, vm = new_host(), uuid.uuid4(), uuid.uuid4()
    host.reserve_capacity(vm, 1000, 512, 1.0, 1.0, "deploy/reserve")
    host.prepare_for_maintenance(job, f"{job}/prepare")
    assert host.resource_state is ResourceState.PREPARE_FOR_MAINTENANCE
    assert not host.can_take_deployments()
    with pytest.raises(IllegalStateTransition, match="still holds 1 VM"):
        host.enter_maintenance(job, f"{job}/maintenance")
    host.release_capacity(vm, "migrate/release-source")
    host.enter_maintenance(job, f"{job}/maintenance")
    assert host.resource_state is ResourceState.MAINTENANCE
    # Repeats are no-ops: no second event.
    version = host.version
    host.prepare_for_maintenance(job, f"{job}/prepare")
    host.enter_maintenance(job, f"{job}/maintenance")
    assert host.version == version


@pytest.mark.parametrize(
    "state",
    [
        ResourceState.PREPARE_FOR_MAINTENANCE,
        ResourceState.MAINTENANCE,
        ResourceState.ERROR_IN_MAINTENANCE,
    ],
)
def test_a_host_in_maintenance_refuses_allocation_changes_and_a_second_maintenance(
    state: ResourceState,
) -> None:
    host, job = new_host(), uuid.uuid4()
    host.change_allocation_state("Disabled", "before/allocation")
    host.prepare_for_maintenance(job, f"{job}/prepare")
    if state is ResourceState.MAINTENANCE:
        host.enter_maintenance(job, f"{job}/maintenance")
    elif state is ResourceState.ERROR_IN_MAINTENANCE:
        host.fail_maintenance(job, ["VM a: cannot move"], f"{job}/error")
    assert host.resource_state is state
    other = uuid.uuid4()
    if state is ResourceState.ERROR_IN_MAINTENANCE:
        # Asked again, the VMs that would not move may move now; cancelled after that, the
        # host goes back to what it was before the first maintenance.
        host.prepare_for_maintenance(other, f"{other}/prepare")
        assert host.resource_state is ResourceState.PREPARE_FOR_MAINTENANCE
        host.abandon_maintenance(other, f"{other}/abandon")
        assert host.resource_state is ResourceState.DISABLED
        return
    with pytest.raises(IllegalStateTransition, match=f"already in {state.value}") as refused:
        host.prepare_for_maintenance(other, f"{other}/prepare")
    assert refused.value.field == "host_id"
    for wanted in ("Enabled", "Disabled"):
        with pytest.raises(IllegalStateTransition, match="cancel its maintenance first") as no:
            host.change_allocation_state(wanted, f"{wanted}/allocation")
        assert no.value.field == "host_id"
    # Cancelling returns it to service, and forgets the reasons.
    assert host.cancel_maintenance(f"{other}/cancel")
    assert host.resource_state is ResourceState.ENABLED
    assert list(host.maintenance_errors) == []


def test_abandoning_a_prepared_maintenance_restores_the_state_before_it_and_only_once() -> None:
    host, job = new_host(), uuid.uuid4()
    host.change_allocation_state("Disabled", "disable/allocation")
    host.prepare_for_maintenance(job, f"{job}/prepare")
    host.abandon_maintenance(job, f"{job}/abandon")
    assert host.resource_state is ResourceState.DISABLED
    version = host.version
    host.abandon_maintenance(job, f"{job}/abandon")  # the undo runs twice
    assert host.version == version
    # Another job's undo never touches a maintenance it did not begin.
    mine = uuid.uuid4()
    host.prepare_for_maintenance(mine, f"{mine}/prepare")
    host.abandon_maintenance(job, f"{job}/abandon-again")
    assert host.resource_state is ResourceState.PREPARE_FOR_MAINTENANCE


def test_maintenance_can_only_be_completed_or_failed_by_the_job_that_prepares_it() -> None:
    host, job, stranger = new_host(), uuid.uuid4(), uuid.uuid4()
    with pytest.raises(IllegalStateTransition, match="not being prepared"):
        host.enter_maintenance(job, f"{job}/maintenance")
    host.prepare_for_maintenance(job, f"{job}/prepare")
    with pytest.raises(IllegalStateTransition, match="not being prepared"):
        host.fail_maintenance(stranger, ["x"], f"{stranger}/error")


def test_allocation_changes_are_enabled_or_disabled_and_the_same_state_is_a_no_op() -> None:
    host = new_host()
    assert host.change_allocation_state("Disabled", "a/allocation")
    assert not host.can_take_deployments()
    assert not host.change_allocation_state("Disabled", "b/allocation")
    assert host.change_allocation_state("Enabled", "c/allocation")
    assert host.can_take_deployments()
    # A late retry of the earlier Disable does not undo the Enable that came after it.
    assert not host.change_allocation_state("Disabled", "a/allocation")
    assert host.can_take_deployments()
    with pytest.raises(InvalidParameter, match="Enabled or Disabled"):
        host.change_allocation_state("Maintenance", "d/allocation")


def test_cancelling_a_host_that_is_not_in_maintenance_changes_nothing() -> None:
    host = new_host()
    assert not host.cancel_maintenance("job/cancel")
    assert host.resource_state is ResourceState.ENABLED


def seeded(memory_cloud: Cloud) -> tuple[Cloud, Host]:
    host = new_host()
    memory_cloud.save(host)
    return memory_cloud, host


def test_begin_records_the_job_and_a_second_maintenance_is_refused(memory_cloud: Cloud) -> None:
    cloud, host = seeded(memory_cloud)
    request = HostMaintenanceRequest(
        job_id=uuid.uuid4(), host_id=host.id, account_id=uuid.uuid4(), summary="maintain"
    )
    assert begin_maintenance(cloud, request, NOW) == host.name
    assert begin_maintenance(cloud, request, NOW) == host.name  # the step again: no-op
    job = cloud.load(Job, request.job_id)
    assert job.status is JobStatus.RUNNING and job.resource_type == "Host"
    assert cloud.load(Host, host.id).maintenance_job_id == request.job_id
    second = request.model_copy(update={"job_id": uuid.uuid4()})
    with pytest.raises(IllegalStateTransition):
        begin_maintenance(cloud, second, NOW)
    missing = request.model_copy(update={"host_id": uuid.uuid4()})
    with pytest.raises(NotFound):
        begin_maintenance(cloud, missing, NOW)


def test_the_vms_to_move_are_those_holding_room_ha_first(memory_cloud: Cloud) -> None:
    cloud, host = seeded(memory_cloud)
    vms = [
        new_vm(name="b-plain", ha_enabled=False),
        new_vm(name="z-ha", ha_enabled=True),
        new_vm(name="a-plain", ha_enabled=False),
    ]
    loaded = cloud.load(Host, host.id)
    for vm in vms:
        cloud.save(vm)
        loaded.reserve_capacity(vm.id, 100, 64, 1.0, 1.0, f"deploy/{vm.id}")
    cloud.save(loaded)
    assert [v.name for v in vms_to_move(cloud, host.id)] == ["z-ha", "a-plain", "b-plain"]
    job = uuid.uuid4()
    first = vms_to_move(cloud, host.id)[0]
    queue, submission = evacuation_of(job, host.name, first, 1)
    assert submission.job_id == evacuation_job_id(job, first.vm_id, 1)
    assert evacuation_job_id(job, first.vm_id, 2) != submission.job_id
    assert queue.workflow_id == f"vm/{first.vm_id}"
    # A migration whose target the planner chooses.
    assert isinstance(submission.operation, MigrateVmRequest)
    assert submission.operation.host_id is None


def test_only_stopped_vms_whose_last_host_it_is_forget_it(memory_cloud: Cloud) -> None:
    cloud, host = seeded(memory_cloud)
    other_host = uuid.uuid4()
    stopped_here, stopped_elsewhere, running_here = new_vm(), new_vm(), new_vm()
    for vm, on in (
        (stopped_here, host.id),
        (stopped_elsewhere, other_host),
        (running_here, host.id),
    ):
        bring_to(vm, VmState.RUNNING, host_id=on)
        if vm is not running_here:
            vm.transition(VmEvent.STOP_REQUESTED, "stop/1")
            vm.transition(VmEvent.OPERATION_SUCCEEDED, "stop/2")
        cloud.save(vm)
    ids = [stopped_here.id, stopped_elsewhere.id, running_here.id, uuid.uuid4()]
    job = uuid.uuid4()
    assert unassign_stopped_vms(cloud, job, host.id, ids) == [stopped_here.id]
    assert unassign_stopped_vms(cloud, job, host.id, ids) == []  # the step again
    assert cloud.load(type(stopped_here), stopped_here.id).last_host_id is None
    assert cloud.load(type(stopped_here), stopped_elsewhere.id).last_host_id == other_host
    assert cloud.load(type(stopped_here), running_here.id).last_host_id == host.id


def test_a_cancel_names_the_maintenance_still_being_prepared(memory_cloud: Cloud) -> None:
    cloud, host = seeded(memory_cloud)
    maintenance = HostMaintenanceRequest(
        job_id=uuid.uuid4(), host_id=host.id, account_id=uuid.uuid4(), summary="maintain"
    )
    cancel = CancelHostMaintenanceRequest(
        job_id=uuid.uuid4(), host_id=host.id, account_id=uuid.uuid4(), summary="cancel"
    )
    with pytest.raises(InvalidParameter, match="not in maintenance"):
        begin_cancel(cloud, cancel, NOW)
    begin_maintenance(cloud, maintenance, NOW)
    again = cancel.model_copy(update={"job_id": uuid.uuid4()})
    assert begin_cancel(cloud, again, NOW) == maintenance.job_id
    assert finish_cancel(cloud, again.job_id, host.id)["resource_state"] == "Enabled"
    assert cloud.load(Job, again.job_id).status is JobStatus.SUCCEEDED


def test_a_cluster_is_enabled_and_disabled_and_an_unknown_one_named(memory_cloud: Cloud) -> None:
    pod = seed_pod(memory_cloud)
    cluster = inventory.add_cluster(memory_cloud, uuid.uuid4(), pod.id, "c", "Simulator")

    def change(resource_id: uuid.UUID, state: str, kind: str = "Cluster") -> dict[str, str]:
        return change_allocation_state(
            memory_cloud,
            AllocationStateRequest(
                job_id=uuid.uuid4(),
                account_id=uuid.uuid4(),
                resource_type=kind,
                resource_id=resource_id,
                allocation_state=state,
                summary="change",
            ),
        )

    assert change(cluster.id, "Disabled")["allocation_state"] == "Disabled"
    assert change(cluster.id, "Disabled")["allocation_state"] == "Disabled"
    assert change(cluster.id, "Enabled")["allocation_state"] == "Enabled"
    with pytest.raises(NotFound) as unknown:
        change(uuid.uuid4(), "Enabled")
    assert unknown.value.field == "cluster_id"
    with pytest.raises(InvalidParameter) as bad:
        change(cluster.id, "Maintenance")
    assert bad.value.field == "allocation_state"


def test_a_failed_maintenance_names_its_first_reasons_and_counts_the_rest() -> None:
    few = maintenance_error_text("h1", ["vm-a: no host fits", "vm-b: migration failed"])
    assert few == "host h1 is in ErrorInMaintenance: vm-a: no host fits; vm-b: migration failed"
    many = maintenance_error_text("h1", [f"vm-{n}: no host fits" for n in range(200)])
    assert many.count("no host fits") == REASONS_IN_ERROR_TEXT
    assert many.endswith(
        f"and {200 - REASONS_IN_ERROR_TEXT} more (the host's maintenance_errors lists them all)"
    )
