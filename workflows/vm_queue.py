"""VirtualMachineQueue: one long-lived workflow per VM (`vm/<vm_id>`) that runs its jobs one at
a time, in the order they were submitted.

The API submits every job on a VM (its deployment included) with update-with-start: the update
starts the job's workflow at once as a child whose id is the job id (so the job exists, can be
followed and cancelled while it waits), and answers the job id. The queue then grants the
jobs their turn one after the other (the `grant` signal) and waits for each to end. A request
identical to the last queued one joins it instead of queuing a duplicate; an Idempotency-Key
that was seen returns its job.

The queue also owns the expunge delay: when a destroy succeeds it sets a durable timer, and when
it fires (and no recover came first) it queues the expunge itself. It continues-as-new when its
history grows, only while no job is in flight, and ends once its VM is removed.

A job terminated from outside (`temporal workflow terminate`) never runs its own failure
record, so the queue writes it (failed, 530 "terminated") and moves on: a terminated job must
not leave its VM's queue waiting for ever. Termination skips the job's undos by definition;
only the record and the VM's state (back to the stable state the job started from, or Error for
a deployment) are repaired, exactly as the job's own failure step would have.

The same workflow serializes a detached volume (`volume/<volume_id>`, `resource_type` "Volume"
in its state, the volume's id in `vm_id`): volume jobs (`submission.volume`) run in the VM's
queue while the volume is attached and in the volume's own queue otherwise; a volume queue ends
once its volume is deleted. When an expunge removes the VM, the queue detaches the VM's data
volumes (patched: `detach-data-volumes-on-expunge`), CloudStack's rule that they survive it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from temporalio import workflow
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, ChildWorkflowError, TerminatedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.deployment import DeploymentActivities
    from activities.deployment_models import DeploymentOutcome
    from activities.job_record_models import JoinedJobs, RefusedJob, WithdrawnJob
    from activities.job_records import JobRecordActivities
    from activities.vm_operation_models import OperationOutcome
    from activities.vm_operations import VmOperationActivities
    from activities.volume_operation_models import RemovedVm, VolumeJobOutcome
    from activities.volume_operations import VolumeOperationActivities
    from domain.errors import ErrorCode
    from domain.ids import derived_id
    from domain.job_requests import (
        VM_QUEUE_WORKFLOW,
        VOLUME_RESOURCE,
        DeployVirtualMachineRequest,
        JobAttribute,
        VmJobAccepted,
        VmJobSubmission,
        VmQueueEntry,
        VmQueueState,
    )
    from domain.job_results import QueuedJobEnd
    from domain.vm_requests import (
        DestroyVmRequest,
        ExpungeVmRequest,
        RecoverVmRequest,
        VmOperation,
        VmOperationRequest,
    )
    from domain.volume_requests import VolumeOperation, VolumeOperationRequest

from workflows.job_state import is_cancellation
from workflows.retry_policies import UNDO_RETRY

A = TypeVar("A")

QUEUE_WORKFLOW = VM_QUEUE_WORKFLOW
DEPLOY_WORKFLOW = "DeployVirtualMachine"
EXPUNGE_INCOMPLETE = "ExpungeIncomplete"
#: How many submitted job ids the queue remembers for idempotent resubmission.
REMEMBERED_JOBS = 200
#: Continue-as-new past this many history events (when no job is in flight).
HISTORY_LIMIT = 4000
MAX_EXPUNGE_RETRY_SECONDS = 3600.0
#: The patch that records terminated jobs; histories from before it never ran that step.
RECORD_TERMINATED_JOBS = "record-terminated-jobs"
#: The patch that detaches an expunged VM's data volumes (CloudStack: they survive it);
#: histories from before it never ran that step.
DETACH_DATA_VOLUMES_ON_EXPUNGE = "detach-data-volumes-on-expunge"
TERMINATED = "terminated"
#: Jobs on a snapshot that do not touch its volume: they run even after the volume is deleted.
SNAPSHOT_JOBS_WITHOUT_THE_VOLUME = frozenset(
    {
        VolumeOperation.DELETE_SNAPSHOT,
        VolumeOperation.CREATE_FROM_SNAPSHOT,
        VolumeOperation.CREATE_TEMPLATE_FROM_SNAPSHOT,
    }
)


@dataclass
class _Entry:
    submission: VmJobSubmission
    sequence: int
    submitted_at: datetime
    status: str = "queued"
    handle: workflow.ChildWorkflowHandle[Any, QueuedJobEnd] | None = None
    done: bool = False
    succeeded: bool = False
    #: What the queue reads of the job's result (`domain.job_results`), once it succeeded.
    result: QueuedJobEnd | None = None
    error_type: str | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    #: Cancelled through the queue before its turn: it is never granted one.
    withdrawn: bool = False
    #: Jobs submitted while this one waited, asking exactly the same: they end as it ends.
    joined: list[_Entry] = field(default_factory=list)

    def public(self) -> VmQueueEntry:
        return VmQueueEntry(
            job_id=self.submission.job_id,
            job_type=self.submission.job_type,
            summary=self.submission.summary,
            status=self.status,
            sequence=self.sequence,
            submitted_at=self.submitted_at,
        )


@workflow.defn(name=QUEUE_WORKFLOW)
class VirtualMachineQueue:
    @workflow.init
    def __init__(self, state: VmQueueState) -> None:
        self._state = state
        self._entries: list[_Entry] = []

    # -- the API's view --------------------------------------------------------------------------
    @workflow.query(name="jobs")
    def jobs(self) -> list[VmQueueEntry]:
        """The running job first, then the queued ones in the order they will run."""
        return [e.public() for e in self._entries if not e.done]

    @workflow.query(name="expunge_at")
    def expunge_at(self) -> datetime | None:
        return self._state.expunge_at

    @workflow.update(name="submit")
    async def submit(self, submission: VmJobSubmission) -> VmJobAccepted:
        known = self._state.recent_jobs.get(str(submission.job_id))
        if known is not None:
            return VmJobAccepted(
                job_id=submission.job_id, joined=True, conflict=known != submission.fingerprint
            )
        joined = self._identical_pending(submission)
        if joined is not None:
            return VmJobAccepted(
                job_id=joined.submission.job_id, joined=True, sequence=joined.sequence
            )
        entry = await self._enqueue(submission)
        return VmJobAccepted(job_id=submission.job_id, sequence=entry.sequence)

    @submit.validator
    def _may_submit(self, submission: VmJobSubmission) -> None:
        refusal = self._refusal(submission)
        if refusal is not None and str(submission.job_id) not in self._state.recent_jobs:
            raise ApplicationError(refusal, type="VmRemoved")

    @workflow.signal(name="enqueue")
    async def enqueue(self, submission: VmJobSubmission) -> None:
        """How the API submits (signal-with-start): the server records the signal durably and
        the API answers at once, whatever this queue's worker is doing. The API has recorded
        the job queued; here it gets its place, joins the identical job it repeats, or is
        refused because its resource is gone."""
        if str(submission.job_id) in self._state.recent_jobs:
            return  # the same submission again (a retried request): it has its place
        refusal = self._refusal(submission)
        if refusal is not None:
            self._remember(submission)
            await self._record(
                JobRecordActivities.refuse,
                RefusedJob(submission=submission, submitted_at=workflow.now(), reason=refusal),
                f"record job {submission.job_id} refused: {refusal}",
            )
            return
        joined = self._identical_pending(submission)
        if joined is not None:
            self._remember(submission)
            joined.joined.append(
                _Entry(submission=submission, sequence=joined.sequence, submitted_at=workflow.now())
            )
            return
        await self._enqueue(submission)

    @workflow.signal(name="withdraw")
    async def withdraw(self, job_id: UUID) -> None:
        """Cancel a job the API could not reach itself: one that joined another (it has no
        workflow of its own) or whose workflow this queue has not started yet."""
        for entry in list(self._entries):
            for joined in entry.joined:
                if joined.submission.job_id == job_id:
                    entry.joined.remove(joined)
                    await self._record(
                        JobRecordActivities.withdraw,
                        WithdrawnJob(
                            submission=joined.submission,
                            submitted_at=joined.submitted_at,
                            reason="cancelled while queued",
                        ),
                        f"record job {job_id} cancelled while queued",
                    )
                    return
            if entry.submission.job_id == job_id and not entry.done:
                if entry.status == "queued":
                    entry.withdrawn = True
                await self._cancel_once_started(entry)
                return

    async def _cancel_once_started(self, entry: _Entry) -> None:
        """Temporal's own cancel of the job's workflow: it leaves the queue as Canceled."""
        await workflow.wait_condition(lambda: entry.handle is not None or entry.done)
        if not entry.done:
            await workflow.get_external_workflow_handle(str(entry.submission.job_id)).cancel()

    def _refusal(self, submission: VmJobSubmission) -> str | None:
        if self._state.removed and not self._outlives_its_volume(submission):
            return (
                f"virtual machine {self._state.vm_id} has been expunged"
                if self._state.resource_type == "VirtualMachine"
                else f"{self._state.resource_type.lower()} {self._state.vm_id} has been deleted"
            )
        return None

    def _outlives_its_volume(self, submission: VmJobSubmission) -> bool:
        """A job on a snapshot of a deleted volume (CloudStack keeps snapshots after their
        volume): a deleted volume's queue still serves it, and ends again afterwards."""
        job = submission.volume
        return (
            self._state.resource_type == VOLUME_RESOURCE
            and job is not None
            and job.operation in SNAPSHOT_JOBS_WITHOUT_THE_VOLUME
        )

    # -- the run ---------------------------------------------------------------------------------
    @workflow.run
    async def run(self, state: VmQueueState) -> None:
        while True:
            if self._head_waiting():
                await self._run_head()
                continue
            if self._expunge_due():
                await self._queue_expunge()
                continue
            if not self._entries and (self._state.removed or self._history_is_long()):
                await workflow.wait_condition(
                    lambda: (
                        (workflow.all_handlers_finished() and not self._entries)
                        # A job a removed volume's queue still serves arrived meanwhile.
                        or self._head_waiting()
                    )
                )
                if self._head_waiting():
                    continue
                if self._state.removed:
                    return
                workflow.continue_as_new(self._state)
            with contextlib.suppress(TimeoutError):  # the expunge timer fired
                await workflow.wait_condition(
                    lambda: (
                        self._head_waiting()
                        or (not self._entries and (self._state.removed or self._history_is_long()))
                    ),
                    timeout=self._until_expunge(),
                )

    def _head_waiting(self) -> bool:
        return (
            bool(self._entries)
            and self._entries[0].status == "queued"
            and (self._entries[0].handle is not None or self._entries[0].done)
        )

    async def _run_head(self) -> None:
        entry = self._entries[0]
        if not entry.done:
            entry.status = "running"
            deployment = entry.submission.deployment
            if (
                (deployment is None or deployment.waits_for_turn)
                and not entry.withdrawn
                and entry.handle is not None
            ):
                try:
                    await entry.handle.signal("grant")
                except Exception as error:  # the job ended (cancelled) meanwhile
                    workflow.logger.warning("could not grant %s: %s", entry.sequence, error)
            await workflow.wait_condition(lambda: entry.done)
        self._entries.remove(entry)
        self._after(entry)
        await self._detach_data_volumes(entry)

    async def _detach_data_volumes(self, entry: _Entry) -> None:
        """CloudStack's rule: an expunged VM's data volumes are detached and survive it (the
        expunge itself only deletes the root volume). From then on their jobs go through
        their own queues."""
        operation = entry.submission.operation
        if (
            operation is None
            or not entry.succeeded
            or entry.result is None
            or not entry.result.removed
            or not workflow.patched(DETACH_DATA_VOLUMES_ON_EXPUNGE)
        ):
            return
        await workflow.execute_activity_method(
            VolumeOperationActivities.detach_from_removed_vm,
            RemovedVm(job_id=operation.job_id, vm_id=self._state.vm_id),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=UNDO_RETRY,
            summary="detach the expunged VM's data volumes (they survive it)",
        )

    def _after(self, entry: _Entry) -> None:
        """What a finished job means for the VM's future: the expunge timer, removal."""
        operation = entry.submission.operation
        now = workflow.now()
        result = entry.result or QueuedJobEnd()
        if entry.submission.volume is not None:
            # A deleted volume's own queue ends, as a VM's does once it is expunged.
            if entry.succeeded and result.removed:
                self._state.removed = True
            return
        if operation is None:
            return
        if entry.succeeded:
            if isinstance(operation, DestroyVmRequest) and not result.removed:
                delay = (
                    result.expunge_delay_seconds
                    if result.expunge_delay_seconds is not None
                    else float(operation.expunge_delay_seconds)
                )
                self._state.expunge_at = now + timedelta(seconds=delay)
                self._state.expunge_source_job = operation.job_id
                self._state.expunge_attempts = 0
            elif isinstance(operation, RecoverVmRequest):
                self._state.expunge_at = None
            if result.removed:
                self._state.removed = True
                self._state.expunge_at = None
        elif entry.error_type == EXPUNGE_INCOMPLETE:
            # Past its point of no return the VM stays Expunging: try again, backing off.
            self._state.expunge_attempts += 1
            backoff = self._state.expunge_retry_seconds * 2 ** (self._state.expunge_attempts - 1)
            self._state.expunge_at = now + timedelta(
                seconds=min(backoff, MAX_EXPUNGE_RETRY_SECONDS)
            )
            self._state.expunge_source_job = operation.job_id

    def _expunge_due(self) -> bool:
        at = self._state.expunge_at
        return (
            at is not None
            and not self._entries
            and not self._state.removed
            and workflow.now() >= at
        )

    def _until_expunge(self) -> timedelta | None:
        at = self._state.expunge_at
        if at is None or self._state.removed:
            return None
        return max(at - workflow.now(), timedelta(milliseconds=1))

    async def _queue_expunge(self) -> None:
        source = self._state.expunge_source_job or self._state.vm_id
        attempt = self._state.expunge_attempts
        self._state.expunge_at = None
        job_id = derived_id(source, f"expunge/{attempt}")
        request = ExpungeVmRequest(
            job_id=job_id,
            vm_id=self._state.vm_id,
            account_id=self._state.account_id,
            summary=f"Expunge VM {self._state.vm_id} after the expunge delay",
        )
        await self._enqueue(
            VmJobSubmission(
                job_id=job_id,
                job_type=VmOperation.EXPUNGE.job_type,
                account_id=self._state.account_id,
                zone_id=self._state.zone_id,
                summary=request.summary,
                details=f"**VM:** `{self._state.vm_id}`\n**Why:** the expunge delay has passed",
                operation=request,
            )
        )

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() > HISTORY_LIMIT
        )

    # -- submissions -----------------------------------------------------------------------------
    def _identical_pending(self, submission: VmJobSubmission) -> _Entry | None:
        """The last queued job, if this submission asks for exactly the same thing."""
        if submission.volume is not None:
            return self._identical_pending_volume_job(submission)
        if submission.operation is None or not self._entries:
            return None
        tail = self._entries[-1]
        asked = tail.submission.operation
        if (
            tail.status == "queued"
            and not tail.done
            and asked is not None
            and asked.same_request_as(submission.operation)
        ):
            return tail
        return None

    def _identical_pending_volume_job(self, submission: VmJobSubmission) -> _Entry | None:
        if submission.volume is None or not self._entries:
            return None
        tail = self._entries[-1]
        asked = tail.submission.volume
        if (
            tail.status == "queued"
            and not tail.done
            and asked is not None
            and asked.same_request_as(submission.volume)
        ):
            return tail
        return None

    async def _enqueue(self, submission: VmJobSubmission) -> _Entry:
        sequence = self._state.next_sequence
        self._state.next_sequence += 1
        self._remember(submission)
        entry = _Entry(submission=submission, sequence=sequence, submitted_at=workflow.now())
        self._entries.append(entry)
        argument: VmOperationRequest | DeployVirtualMachineRequest | VolumeOperationRequest | None
        argument = submission.operation
        workflow_type = submission.job_type
        if submission.deployment is not None:
            workflow_type, argument = DEPLOY_WORKFLOW, submission.deployment
        elif submission.volume is not None:
            argument = submission.volume
        try:
            entry.handle = await workflow.start_child_workflow(
                workflow_type,
                argument,
                id=str(submission.job_id),
                task_queue=workflow.info().task_queue,
                search_attributes=self._attributes(submission),
                static_summary=submission.summary,
                static_details=submission.details or None,
                memo={"request_fingerprint": submission.fingerprint},
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                result_type=QueuedJobEnd,
            )
        except BaseException:
            self._entries.remove(entry)
            raise
        entry.watcher = asyncio.create_task(self._watch(entry))
        return entry

    async def _watch(self, entry: _Entry) -> None:
        assert entry.handle is not None
        try:
            entry.result = await entry.handle
            entry.succeeded = True
        except ChildWorkflowError as error:
            cause = error.cause
            entry.error_type = (
                "Cancelled"
                if is_cancellation(error)
                else getattr(cause, "type", None) or type(cause).__name__
            )
            if isinstance(cause, TerminatedError) and workflow.patched(RECORD_TERMINATED_JOBS):
                # Before `done`: the next job begins only once this one's record is final.
                try:
                    await self._record_terminated(entry)
                except Exception as failure:  # the queue moves on even if the record fails
                    workflow.logger.error("could not record %s terminated: %s", entry, failure)
        await self._end_joined(entry)
        entry.done = True
        if entry.status == "queued" and entry in self._entries[1:]:
            # Cancelled while it waited: it leaves the queue without ever running.
            self._entries.remove(entry)

    async def _end_joined(self, entry: _Entry) -> None:
        """The jobs that joined this one end as it ended (its end is recorded by now)."""
        if not entry.joined:
            return
        try:
            await self._record(
                JobRecordActivities.end_as_joined,
                JoinedJobs(
                    job_ids=[joined.submission.job_id for joined in entry.joined],
                    joined_job_id=entry.submission.job_id,
                ),
                f"record {len(entry.joined)} joined job(s) ended as {entry.submission.job_id}",
            )
        except Exception as failure:  # the queue moves on even if the records fail
            workflow.logger.error("could not end the jobs that joined %s: %s", entry, failure)

    async def _record(self, activity: Callable[[Any, A], object], arg: A, summary: str) -> None:
        await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=UNDO_RETRY,
            summary=summary,
        )

    async def _record_terminated(self, entry: _Entry) -> None:
        """Write the failure a terminated job could not write itself. Both steps are the jobs'
        own failure records, idempotent by job id, and change nothing once the job has ended."""
        submission = entry.submission
        code = int(ErrorCode.INTERNAL_ERROR)
        summary = f"record job {submission.job_id} failed: {TERMINATED}"
        if submission.operation is not None:
            await workflow.execute_activity_method(
                VmOperationActivities.fail,
                OperationOutcome(
                    request=submission.operation,
                    submitted_at=entry.submitted_at,
                    error_code=code,
                    error_text=TERMINATED,
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=UNDO_RETRY,
                summary=summary,
            )
        elif submission.volume is not None:
            await workflow.execute_activity_method(
                VolumeOperationActivities.fail,
                VolumeJobOutcome(
                    request=submission.volume,
                    submitted_at=entry.submitted_at,
                    error_code=code,
                    error_text=TERMINATED,
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=UNDO_RETRY,
                summary=summary,
            )
        elif submission.deployment is not None:
            deployment = submission.deployment
            await workflow.execute_activity_method(
                DeploymentActivities.fail,
                DeploymentOutcome(
                    job_id=deployment.job_id,
                    error_code=code,
                    error_text=TERMINATED,
                    order=deployment.order,
                    submitted_at=entry.submitted_at,
                    summary=deployment.summary,
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=UNDO_RETRY,
                summary=summary,
            )

    def _remember(self, submission: VmJobSubmission) -> None:
        recent = self._state.recent_jobs
        recent[str(submission.job_id)] = submission.fingerprint
        while len(recent) > REMEMBERED_JOBS:
            del recent[next(iter(recent))]

    def _attributes(self, submission: VmJobSubmission) -> TypedSearchAttributes:
        values = {
            JobAttribute.JOB_TYPE: submission.job_type,
            JobAttribute.JOB_STATE: "queued",
            JobAttribute.ACCOUNT_ID: str(submission.account_id),
            JobAttribute.RESOURCE_TYPE: (
                "Volume" if submission.volume is not None else self._state.resource_type
            ),
            JobAttribute.RESOURCE_ID: str(
                submission.volume.volume_id if submission.volume is not None else self._state.vm_id
            ),
        }
        zone_id = submission.zone_id or self._state.zone_id
        if zone_id is not None:
            values[JobAttribute.ZONE_ID] = str(zone_id)
        return TypedSearchAttributes(
            [
                SearchAttributePair(SearchAttributeKey.for_keyword(name.value), value)
                for name, value in values.items()
            ]
        )
