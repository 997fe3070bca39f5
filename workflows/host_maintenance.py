"""Host maintenance jobs: PrepareHostForMaintenance, CancelHostMaintenance, and the short
ChangeAllocationState that enables or disables a host or a cluster.

PrepareHostForMaintenance puts the host in PrepareForMaintenance (undo: back to the state it was
in), unassigns the stopped VMs that last ran there, then moves every VM that holds room on the
host with migrate jobs, each a job of its own in its VM's queue (visible, cancellable, serialized
with whatever else the VM is doing): the HA-enabled VMs first, then the others. A VM that is
still there after its job ended gets another round, up to MAX_ROUNDS. The host ends in
Maintenance when nothing holds room on it, or in ErrorInMaintenance with one reason per VM that
would not move; the job then fails with those reasons (534), the host staying in that state
until an operator cancels the maintenance or asks again.

Cancelling the job while it prepares (or CancelHostMaintenance, which does that first) unwinds
it: migrate jobs that have not run are withdrawn from their queues, VMs already moved stay where
they are, and the host goes back to the state it was in.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.host_maintenance import HostMaintenanceActivities
    from activities.host_maintenance_models import (
        CancelStep,
        Evacuation,
        EvacuationEnd,
        EvacuationEnded,
        EvacuationSubmitted,
        HostJobStep,
        JobToCancel,
        MaintenanceErrors,
        MaintenanceOutcome,
        MaintenanceStep,
        StepEntered,
        VmOnTheHost,
        VmsOnTheHost,
    )
    from domain.errors import ErrorCode
    from domain.host_maintenance import (
        CANCEL_MAINTENANCE_JOB,
        CHANGE_ALLOCATION_JOB,
        PREPARE_MAINTENANCE_JOB,
        AllocationStateRequest,
        CancelHostMaintenanceRequest,
        HostMaintenanceRequest,
        maintenance_error_text,
    )

from workflows.job import JobWorkflow, no_failure_record
from workflows.retry_policies import UNDO_RETRY
from workflows.saga import Saga

#: Rounds of migrations before the host is declared ErrorInMaintenance.
MAX_ROUNDS = 3
#: How long one wave of migrate jobs may take (they wait in their VMs' queues first).
WAVE_TIMEOUT = timedelta(hours=6)
#: How long a cancel waits for the maintenance job it cancels to unwind.
UNWIND_TIMEOUT = timedelta(hours=1)


@workflow.defn(name=PREPARE_MAINTENANCE_JOB)
class PrepareHostForMaintenance(JobWorkflow[dict[str, str]]):
    @workflow.run
    async def run(self, request: HostMaintenanceRequest) -> dict[str, str]:
        submitted_at = workflow.info().start_time
        return await self._execute_recorded(
            lambda saga: self._prepare(request, saga),
            fail=HostMaintenanceActivities.fail,
            outcome=lambda code, text, cancelled: MaintenanceOutcome(
                job_type=PREPARE_MAINTENANCE_JOB,
                maintenance=request,
                submitted_at=submitted_at,
                error_code=code,
                error_text=text,
                cancelled=cancelled,
            ),
            waits_for_turn=False,
        )

    async def _prepare(self, request: HostMaintenanceRequest, saga: Saga) -> dict[str, str]:
        on_host = HostJobStep(job_id=request.job_id, host_id=request.host_id)
        self._enter("preparing the host for maintenance")
        saga.add("maintenance", self._undo(HostMaintenanceActivities.abandon_maintenance, on_host))
        host_name: str = await self._control(
            HostMaintenanceActivities.begin_maintenance,
            MaintenanceStep(request=request, submitted_at=workflow.info().start_time),
            "put the host in PrepareForMaintenance: it takes no new VMs",
        )
        if request.stopped_vm_ids:
            await self._control(
                HostMaintenanceActivities.unassign_stopped_vms,
                MaintenanceStep(request=request, submitted_at=workflow.info().start_time),
                f"unassign {len(request.stopped_vm_ids)} stopped VM(s) that last ran here",
            )
        last_ends: dict[str, EvacuationEnd] = {}
        remaining: list[VmOnTheHost] = []
        for round_number in range(1, MAX_ROUNDS + 1):
            found: VmsOnTheHost = await self._control(
                HostMaintenanceActivities.vms_to_move, on_host, "list the VMs still on the host"
            )
            remaining = found.vms
            retry_helps = round_number == 1 or self._worth_another(remaining, last_ends)
            if not remaining or not retry_helps:
                break
            ha = [vm for vm in remaining if vm.ha_enabled]
            others = [vm for vm in remaining if not vm.ha_enabled]
            for wave, kind in ((ha, "HA-enabled "), (others, "")):
                if wave:
                    for end in await self._evacuate(
                        request, host_name, round_number, wave, kind, saga
                    ):
                        last_ends[str(end.vm_id)] = end
        else:
            found = await self._control(
                HostMaintenanceActivities.vms_to_move, on_host, "list the VMs still on the host"
            )
            remaining = found.vms
        if remaining:
            errors = [self._why_still_there(vm, last_ends) for vm in remaining]
            self._enter("recording ErrorInMaintenance")
            self._no_return = "the host is being put in ErrorInMaintenance"
            await self._control(
                HostMaintenanceActivities.fail_maintenance,
                MaintenanceErrors(job_id=request.job_id, host_id=request.host_id, errors=errors),
                f"record ErrorInMaintenance: {len(errors)} VM(s) could not move",
            )
            # What moved stays moved; the host keeps its maintenance state for the operator.
            saga.forget()
            raise ApplicationError(
                maintenance_error_text(host_name, errors),
                int(ErrorCode.RESOURCE_UNAVAILABLE),
                type="ErrorInMaintenance",
                non_retryable=True,
            )
        self._enter("recording Maintenance")
        self._no_return = "the host is empty and being put in Maintenance"
        return await self._control(
            HostMaintenanceActivities.complete_maintenance,
            on_host,
            f"record host {host_name} in Maintenance",
        )

    async def _evacuate(
        self,
        request: HostMaintenanceRequest,
        host_name: str,
        round_number: int,
        vms: list[VmOnTheHost],
        kind: str,
        saga: Saga,
    ) -> list[EvacuationEnd]:
        """One wave: a migrate job per VM in its queue, then wait until all of them ended."""
        what = f"{len(vms)} {kind}VM(s)"
        self._enter(f"migrating {what} away (round {round_number})")
        await self._control(
            HostMaintenanceActivities.enter_step,
            StepEntered(
                job_id=request.job_id,
                step=f"migrating {what} away (round {round_number})",
                name=f"evacuate/{round_number}/{kind.strip() or 'other'}",
            ),
            "record the step",
        )
        wave = Evacuation(
            job_id=request.job_id,
            host_id=request.host_id,
            host_name=host_name,
            round_number=round_number,
            vms=vms,
            task_queue=workflow.info().task_queue,
        )
        # The undo first: a cancel (or a failure) while the jobs are being submitted must
        # withdraw whichever of them got into their queues.
        saga.add(
            f"evacuation/{round_number}/{kind}",
            self._undo(HostMaintenanceActivities.withdraw_evacuation, wave),
        )
        submitted: EvacuationSubmitted = await self._control(
            HostMaintenanceActivities.submit_evacuation,
            wave,
            f"submit a migrate job for each of {what}",
        )
        ended: EvacuationEnded = await self._wait_for(
            HostMaintenanceActivities.await_evacuation,
            submitted,
            f"wait for the migrate jobs of {what}",
            timeout=WAVE_TIMEOUT,
        )
        return ended.ends

    @staticmethod
    def _worth_another(remaining: list[VmOnTheHost], ends: dict[str, EvacuationEnd]) -> bool:
        """Another round helps a VM whose migration succeeded yet is back (or new) here, or
        was cancelled; not one whose migration failed (it would fail the same way)."""
        return any(
            str(vm.vm_id) not in ends or ends[str(vm.vm_id)].status != "failed" for vm in remaining
        )

    @staticmethod
    def _why_still_there(vm: VmOnTheHost, ends: dict[str, EvacuationEnd]) -> str:
        end = ends.get(str(vm.vm_id))
        if end is None:
            return f"VM {vm.name} ({vm.vm_id}): still on the host"
        why = end.error_text or end.status
        return f"VM {vm.name} ({vm.vm_id}): migrate job {end.job_id} {end.status}: {why}"


@workflow.defn(name=CANCEL_MAINTENANCE_JOB)
class CancelHostMaintenance(JobWorkflow[dict[str, str]]):
    """Back in service: a maintenance still being prepared is cancelled first (and unwinds),
    then the host is Enabled."""

    @workflow.run
    async def run(self, request: CancelHostMaintenanceRequest) -> dict[str, str]:
        submitted_at = workflow.info().start_time
        return await self._execute_recorded(
            lambda saga: self._cancel(request),
            fail=HostMaintenanceActivities.fail,
            outcome=lambda code, text, cancelled: MaintenanceOutcome(
                job_type=CANCEL_MAINTENANCE_JOB,
                cancel=request,
                submitted_at=submitted_at,
                error_code=code,
                error_text=text,
                cancelled=cancelled,
            ),
            waits_for_turn=False,
        )

    async def _cancel(self, request: CancelHostMaintenanceRequest) -> dict[str, str]:
        self._enter("checking the host is in maintenance")
        preparing: str | None = await self._control(
            HostMaintenanceActivities.begin_cancel,
            CancelStep(request=request, submitted_at=workflow.info().start_time),
            "check the host is in maintenance",
        )
        if preparing is not None:
            self._enter(f"cancelling maintenance job {preparing}")
            await self._wait_for(
                HostMaintenanceActivities.cancel_job,
                JobToCancel(job_id=UUID(preparing), reason=f"cancelled by job {request.job_id}"),
                f"cancel maintenance job {preparing} and wait for it to unwind",
                timeout=UNWIND_TIMEOUT,
            )
        self._enter("putting the host back in service")
        self._no_return = "the host is being put back in service"
        return await self._control(
            HostMaintenanceActivities.finish_cancel,
            HostJobStep(job_id=request.job_id, host_id=request.host_id),
            "put the host back in service (Enabled)",
            retry=UNDO_RETRY,
        )


@workflow.defn(name=CHANGE_ALLOCATION_JOB)
class ChangeAllocationState(JobWorkflow[dict[str, str]]):
    """Enable or disable a host or a cluster for new VMs (a short admin job)."""

    @workflow.run
    async def run(self, request: AllocationStateRequest) -> dict[str, str]:
        return await self._execute(
            lambda saga: self._control(
                HostMaintenanceActivities.change_allocation_state,
                request,
                f"record {request.resource_type.lower()} {request.allocation_state}",
            ),
            record_failure=no_failure_record,
            waits_for_turn=False,
        )


HOST_MAINTENANCE_WORKFLOWS: tuple[type, ...] = (
    PrepareHostForMaintenance,
    CancelHostMaintenance,
    ChangeAllocationState,
)
