"""Host maintenance activities on the control plane: the host's resource state (decisions over
the event store), the migrate jobs that move its VMs away (handed to each VM's queue, as the
API hands jobs), and waiting for those jobs to end.

The steps that talk to Temporal need its client: the composition root gives it to the
constructor, and without one they use the client of the worker running the activity.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import reports_cloud_errors
from activities.host_maintenance_models import (
    CancelStep,
    Evacuation,
    EvacuationEnd,
    EvacuationEnded,
    EvacuationJob,
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
from activities.job_queue import ActivitiesWithClient, enqueue, withdraw
from domain import host_maintenance
from domain.cloud import Cloud
from domain.host_maintenance import AllocationStateRequest, VmToMove
from domain.job_requests import JobQueue, VmJobSubmission

#: How often the wait for migrate jobs reads their records (and heartbeats).
POLL_SECONDS = 0.5
#: How many jobs are handed to their queues at once (each is a signal-with-start and a write).
HANDED_AT_ONCE = 16


class HostMaintenanceActivities(ActivitiesWithClient):
    # -- prepareHostForMaintenance ----------------------------------------------------------
    @activity.defn(name="host.begin_maintenance")
    @reports_cloud_errors
    def begin_maintenance(self, step: MaintenanceStep) -> str:
        return host_maintenance.begin_maintenance(self.cloud, step.request, step.submitted_at)

    @activity.defn(name="host.abandon_maintenance")
    @reports_cloud_errors
    def abandon_maintenance(self, step: HostJobStep) -> None:
        host_maintenance.abandon_maintenance(self.cloud, step.job_id, step.host_id)

    @activity.defn(name="host.unassign_stopped_vms")
    @reports_cloud_errors
    def unassign_stopped_vms(self, step: MaintenanceStep) -> int:
        request = step.request
        return len(
            host_maintenance.unassign_stopped_vms(
                self.cloud, request.job_id, request.host_id, request.stopped_vm_ids
            )
        )

    @activity.defn(name="host.vms_to_move")
    @reports_cloud_errors
    def vms_to_move(self, step: HostJobStep) -> VmsOnTheHost:
        return VmsOnTheHost(
            vms=[
                VmOnTheHost(
                    vm_id=vm.vm_id,
                    name=vm.name,
                    account_id=vm.account_id,
                    zone_id=vm.zone_id,
                    ha_enabled=vm.ha_enabled,
                )
                for vm in host_maintenance.vms_to_move(self.cloud, step.host_id)
            ]
        )

    @activity.defn(name="host.submit_evacuation")
    async def submit_evacuation(self, wave: Evacuation) -> EvacuationSubmitted:
        """One migrate job per VM, each in its VM's queue. Job ids derive from the maintenance
        job, the VM and the round, so a retried step submits the same jobs again, which their
        queues recognise."""
        return await hand_over(self.client, self.cloud, _evacuations(wave), wave.task_queue)

    @activity.defn(name="host.withdraw_evacuation")
    async def withdraw_evacuation(self, wave: Evacuation) -> None:
        """The undo of a wave, registered before it is submitted: whichever of its migrate
        jobs were submitted and have not ended are cancelled through their queues (a migration
        already under way finishes: it is past its point of no return; a job never submitted
        is unknown to its queue, which ignores it)."""
        evacuations = _evacuations(wave)
        ended = await asyncio.to_thread(
            host_maintenance.ended_jobs, self.cloud, [s.job_id for _, s, _ in evacuations]
        )
        for queue, submission, _ in evacuations:
            if submission.job_id in ended:
                continue
            try:
                await withdraw(self.client, queue.workflow_id, submission.job_id)
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise

    @activity.defn(name="host.await_evacuation")
    async def await_evacuation(self, submitted: EvacuationSubmitted) -> EvacuationEnded:
        """Wait until every migrate job of the wave has ended, heartbeating (a cancel of the
        maintenance job reaches this wait through the heartbeat)."""
        waiting = {j.job_id: j for j in submitted.jobs}
        ends: list[EvacuationEnd] = []
        while waiting:
            ended = await asyncio.to_thread(host_maintenance.ended_jobs, self.cloud, list(waiting))
            for job_id, job in ended.items():
                submitted_job = waiting.pop(job_id)
                ends.append(
                    EvacuationEnd(
                        vm_id=submitted_job.vm_id,
                        vm_name=submitted_job.vm_name,
                        job_id=job_id,
                        status=job.status.value,
                        error_text=job.error_text,
                    )
                )
            activity.heartbeat(f"{len(waiting)} migrate job(s) still running")
            if waiting:
                await asyncio.sleep(POLL_SECONDS)
        return EvacuationEnded(ends=ends)

    @activity.defn(name="host.enter_step")
    @reports_cloud_errors
    def enter_step(self, step: StepEntered) -> None:
        host_maintenance.enter_step(self.cloud, step.job_id, step.step, step.name)

    @activity.defn(name="host.complete_maintenance")
    @reports_cloud_errors
    def complete_maintenance(self, step: HostJobStep) -> dict[str, str]:
        return host_maintenance.complete_maintenance(self.cloud, step.job_id, step.host_id)

    @activity.defn(name="host.fail_maintenance")
    @reports_cloud_errors
    def fail_maintenance(self, step: MaintenanceErrors) -> None:
        host_maintenance.fail_maintenance(self.cloud, step.job_id, step.host_id, step.errors)

    @activity.defn(name="host.fail")
    @reports_cloud_errors
    def fail(self, outcome: MaintenanceOutcome) -> None:
        request = outcome.maintenance or outcome.cancel
        assert request is not None
        host_maintenance.fail_job(
            self.cloud,
            request,
            outcome.job_type,
            outcome.submitted_at,
            outcome.error_code,
            outcome.error_text,
            outcome.cancelled,
        )

    # -- cancelHostMaintenance --------------------------------------------------------------
    @activity.defn(name="host.begin_cancel")
    @reports_cloud_errors
    def begin_cancel(self, step: CancelStep) -> str | None:
        preparing = host_maintenance.begin_cancel(self.cloud, step.request, step.submitted_at)
        return str(preparing) if preparing is not None else None

    @activity.defn(name="host.cancel_job")
    async def cancel_job(self, job: JobToCancel) -> None:
        """Cancel a maintenance job that is still preparing the host, and wait until it has
        unwound (it puts the host back as it was and withdraws its migrate jobs)."""
        handle = self.client.get_workflow_handle(str(job.job_id))
        try:
            await handle.cancel()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            return
        waiter = asyncio.ensure_future(handle.result())
        try:
            while not waiter.done():
                activity.heartbeat("waiting for the maintenance job to unwind")
                await asyncio.wait({waiter}, timeout=POLL_SECONDS * 4)
        finally:
            waiter.cancel()
        # It unwound (closed as Canceled or Failed): that is what was asked.
        with contextlib.suppress(WorkflowFailureError, asyncio.CancelledError):
            waiter.result()

    @activity.defn(name="host.finish_cancel")
    @reports_cloud_errors
    def finish_cancel(self, step: HostJobStep) -> dict[str, str]:
        return host_maintenance.finish_cancel(self.cloud, step.job_id, step.host_id)

    # -- allocation state -------------------------------------------------------------------
    @activity.defn(name="host.change_allocation_state")
    @reports_cloud_errors
    def change_allocation_state(self, request: AllocationStateRequest) -> dict[str, str]:
        return host_maintenance.change_allocation_state(self.cloud, request)


async def hand_over(
    client: Client,
    cloud: Cloud,
    jobs: list[tuple[JobQueue, VmJobSubmission, VmOnTheHost]],
    task_queue: str,
) -> EvacuationSubmitted:
    """Each VM's job into its queue, HANDED_AT_ONCE at a time (a retry submits the same ids,
    which the queues know); answers what to wait for with `host.await_evacuation`, in the
    order given."""
    slots = asyncio.Semaphore(HANDED_AT_ONCE)

    async def one(queue: JobQueue, submission: VmJobSubmission) -> None:
        async with slots:
            await enqueue(client, cloud, queue, submission, task_queue)
            activity.heartbeat(f"handed {submission.job_id} to {queue.workflow_id}")

    await asyncio.gather(*(one(queue, submission) for queue, submission, _ in jobs))
    return EvacuationSubmitted(
        jobs=[
            EvacuationJob(
                vm_id=vm.vm_id,
                vm_name=vm.name,
                job_id=submission.job_id,
                queue_id=queue.workflow_id,
            )
            for queue, submission, vm in jobs
        ]
    )


def _evacuations(wave: Evacuation) -> list[tuple[JobQueue, VmJobSubmission, VmOnTheHost]]:
    """The wave's migrate jobs and their queues, the same whenever they are asked for."""
    found = []
    for vm in wave.vms:
        queue, submission = host_maintenance.evacuation_of(
            wave.job_id,
            wave.host_name,
            VmToMove(vm.vm_id, vm.name, vm.account_id, vm.zone_id, vm.ha_enabled),
            wave.round_number,
        )
        found.append((queue, submission, vm))
    return found


def host_maintenance_activities(cloud: Cloud, client: Client | None = None) -> list[Any]:
    hosts = HostMaintenanceActivities(cloud, client)
    return [
        hosts.begin_maintenance,
        hosts.abandon_maintenance,
        hosts.unassign_stopped_vms,
        hosts.vms_to_move,
        hosts.submit_evacuation,
        hosts.withdraw_evacuation,
        hosts.await_evacuation,
        hosts.enter_step,
        hosts.complete_maintenance,
        hosts.fail_maintenance,
        hosts.fail,
        hosts.begin_cancel,
        hosts.cancel_job,
        hosts.finish_cancel,
        hosts.change_allocation_state,
    ]
