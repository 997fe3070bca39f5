"""Handing a job to a VM's (or a detached volume's) queue from inside an activity, as the API
does (api/job_submission.py): signal-with-start of the queue (durable once the call returns,
whatever its worker is doing), then the job recorded queued in the event store. A job id
submitted again is recognised by its queue, and its record is made once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from domain import job_submission
from domain.cloud import Cloud
from domain.job_requests import ENQUEUE_SIGNAL, VM_QUEUE_WORKFLOW, JobQueue, VmJobSubmission

#: The queue's signal that cancels one of its jobs, started or not.
WITHDRAW_SIGNAL = "withdraw"


async def enqueue(
    client: Client, cloud: Cloud, queue: JobQueue, submission: VmJobSubmission, task_queue: str
) -> VmJobSubmission:
    """Answers the submission as queued (with its queue's id)."""
    submission = submission.model_copy(update={"queue_id": queue.workflow_id})
    await client.start_workflow(
        VM_QUEUE_WORKFLOW,
        queue.state,
        id=queue.workflow_id,
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SearchAttributeKey.for_keyword(a.value), v)
                for a, v in queue.attributes().items()
            ]
        ),
        static_summary=queue.summary,
        start_signal=ENQUEUE_SIGNAL,
        start_signal_args=[submission],
    )
    await asyncio.to_thread(job_submission.record_submitted, cloud, submission, datetime.now(UTC))
    return submission


async def withdraw(client: Client, queue_id: str, job_id: object) -> None:
    """Cancel a queued job through its queue (a running one unwinds unless past its point of
    no return)."""
    await client.get_workflow_handle(queue_id).signal(WITHDRAW_SIGNAL, job_id)


class ActivitiesWithClient:
    """Activities that talk to Temporal (start jobs, signal queues, manage schedules): the
    composition root gives them the worker's client; without one they use the client of the
    worker running the activity, which is the same thing for a worker built by `workers`."""

    def __init__(self, cloud: Cloud, client: Client | None = None) -> None:
        self.cloud = cloud
        self._client = client

    @property
    def client(self) -> Client:
        return self._client or activity.client()
