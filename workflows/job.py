"""The job base: what every cloud operation's workflow shares, so each kind only lists its steps.

A job (deploy, VM operation, volume or snapshot job, policy change, new host, ...) is a workflow
whose id is the job id. The base owns:

- **its turn**: a job on a resource waits for its queue's `grant` signal (workflows/
  resource_queue.py), so operations on one VM or volume never overlap;
- **the step record**: `current_step` (query) and the Temporal UI's current details;
- **cancellation, one path**: `POST /v1/jobs/{id}/cancel` sends the `cancel` update (its
  validator answers 409 once the job is past its point of no return) and then Temporal's own
  cancel; the Temporal UI's Cancel button sends the latter alone. Both end in `_request_cancel`.
  A queued job leaves its queue; a running one unwinds; a job that unwound because it was
  cancelled closes as Canceled in Temporal, whichever way the cancel came;
- **the saga**: each step that changes the world registers its undo before it runs, and a
  failure or a cancel runs the undos newest first. Every step is cancelled with
  WAIT_CANCELLATION_COMPLETED, so an undo never races the step it undoes; a step that finishes
  anyway is followed by a safe point where the cancel takes effect;
- **the failure record** with its CloudStack code, and the JobState search attribute;
- **the retry policies** (workflows/retry_policies.py).

A job kind subclasses `JobWorkflow`, implements its steps, and says how its failure is
recorded (the record also puts its resource back in a stable state, which is the kind's own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ActivityCancellationType

from workflows.job_state import failure_of, is_cancellation, set_job_state
from workflows.retry_policies import (
    CONTROL_RETRY,
    CONTROL_TIMEOUT,
    HYPERVISOR_HEARTBEAT_TIMEOUT,
    HYPERVISOR_RETRY,
    HYPERVISOR_TIMEOUT,
    UNDO_RETRY,
)
from workflows.saga import Saga

A = TypeVar("A")
R = TypeVar("R")
R2 = TypeVar("R2")

PAST_NO_RETURN = "PastPointOfNoReturn"
#: The patch under which a job cancelled by the `cancel` update waits for Temporal's own cancel
#: request (the API sends it right after the update), so that it closes as Canceled.
CLOSE_CANCELLED_AS_CANCELED = "close-cancelled-as-canceled"
#: How long a cancelled job waits for Temporal's cancel request before it closes anyway (as
#: Failed with a CancelledError cause, as it did before the patch): the API that sent the
#: update died before it could send the cancel.
CANCEL_DELIVERY_WAIT = timedelta(seconds=60)

Step = Callable[[Saga], Awaitable[R]]
Record = Callable[[], Awaitable[object]]
FailureRecord = Callable[[int, str, bool], Awaitable[object]]


async def no_failure_record(code: int, text: str, cancelled: bool) -> None:
    """For jobs with no job record (admin jobs without an account: a cluster, a pool, a
    simulator fault): their one step either recorded what they add or nothing, and how they
    ended is Temporal's own."""


class JobWorkflow(Generic[R]):
    """Turn, step record, cancellation, saga, failure record: everything but the steps."""

    def __init__(self) -> None:
        self._step = "queued"
        self._granted = False
        self._cancel_requested = False
        #: Temporal's own cancel request reached this run (only then does it close Canceled).
        self._cancel_delivered = False
        #: Why a cancel is refused from now on (the job can no longer be taken back).
        self._no_return: str | None = None
        #: Why a cancel must wait (undos are running): it takes effect at the next safe point.
        self._deferred: str | None = None
        #: The error type a failure is reported with from now on (e.g. an expunge that began
        #: deleting: its queue tries it again).
        self._fails_as: str | None = None
        self._work: asyncio.Task[R] | None = None

    # -- the queue's, the API's and the UI's view ----------------------------------------------
    @workflow.signal(name="grant")
    def grant(self) -> None:
        """The resource's queue says it is this job's turn."""
        self._granted = True

    @workflow.query(name="current_step")
    def current_step(self) -> str:
        return self._step

    @workflow.update(name="cancel")
    async def cancel(self, reason: str) -> str:
        """Cancel: a queued job leaves the queue, a running one unwinds. Answers which."""
        was = "running" if self._granted else "queued"
        self._request_cancel()
        return was

    @cancel.validator
    def _may_cancel(self, reason: str) -> None:
        if self._no_return is not None:
            raise ApplicationError(
                f"the job is past its point of no return: {self._no_return}", type=PAST_NO_RETURN
            )

    def _request_cancel(self) -> None:
        self._cancel_requested = True
        if (
            self._no_return is None
            and self._deferred is None
            and self._work is not None
            and not self._work.done()
        ):
            self._work.cancel()

    # -- the run --------------------------------------------------------------------------------
    async def _execute(
        self,
        perform: Step[R],
        *,
        record_failure: FailureRecord,
        record_cancelled_while_queued: Record | None = None,
        waits_for_turn: bool = True,
    ) -> R:
        """Run the job as a task of its own, so that Temporal's cancellation of this workflow
        is weighed like the cancel update instead of interrupting whatever runs."""
        self._work = asyncio.create_task(
            self._run_job(
                perform,
                record_failure=record_failure,
                record_cancelled_while_queued=record_cancelled_while_queued
                or (lambda: record_failure(0, "cancelled while queued", True)),
                waits_for_turn=waits_for_turn,
            )
        )
        try:
            return await asyncio.shield(self._work)
        except asyncio.CancelledError:
            # Temporal cancelled this workflow (an operator, the API, or its queue went away).
            self._cancel_delivered = True
            self._request_cancel()
            return await self._work

    async def _execute_recorded(
        self,
        perform: Step[R],
        *,
        fail: Callable[[Any, A], object],
        outcome: Callable[[int, str, bool], A],
        cancelled_while_queued: Callable[[Any, A], object] | None = None,
        waits_for_turn: bool = True,
    ) -> R:
        """`_execute` for a job kind whose end is recorded by its own activities: `fail`
        records a failure or a cancel (and puts its resource back in a stable state), and
        `cancelled_while_queued` (when the kind has one) a job that never had its turn; both
        take the kind's `outcome` of (code, text, cancelled)."""
        queued = cancelled_while_queued or fail
        return await self._execute(
            perform,
            record_cancelled_while_queued=lambda: self._control(
                queued,
                outcome(0, "cancelled while queued", True),
                "record the job cancelled while queued",
                retry=UNDO_RETRY,
            ),
            record_failure=lambda code, text, cancelled: self._control(
                fail, outcome(code, text, cancelled), "record the failure", retry=UNDO_RETRY
            ),
            waits_for_turn=waits_for_turn,
        )

    async def _run_job(
        self,
        perform: Step[R],
        *,
        record_failure: FailureRecord,
        record_cancelled_while_queued: Record,
        waits_for_turn: bool,
    ) -> R:
        if waits_for_turn:
            try:
                if self._cancel_requested:
                    raise asyncio.CancelledError()
                await workflow.wait_condition(lambda: self._granted)
            except asyncio.CancelledError:
                self._no_return = "it was cancelled while queued"
                await record_cancelled_while_queued()
                set_job_state("cancelled")
                self._enter("cancelled")
                await self._until_cancel_delivered()
                raise
        set_job_state("running")
        saga = Saga()
        try:
            result = await perform(saga)
        except BaseException as error:
            if isinstance(error, GeneratorExit):
                raise  # the worker dropped this run from its cache: nothing to unwind here
            # From here on the job only unwinds: a cancel now would interrupt the undos.
            self._no_return = self._no_return or "it is already unwinding"
            cancelled = is_cancellation(error)
            code, text, kind = failure_of(error)
            if self._fails_as is not None and not cancelled:
                kind = self._fails_as
            self._enter("unwinding")
            await saga.unwind()
            if saga.failures:
                text += " (could not undo: " + "; ".join(saga.failures) + ")"
            await record_failure(code, text, cancelled)
            set_job_state("cancelled" if cancelled else "failed")
            self._enter("cancelled" if cancelled else "failed")
            if cancelled:
                await self._until_cancel_delivered()
                raise
            raise ApplicationError(text, code, type=kind, non_retryable=True) from None
        set_job_state("succeeded")
        self._enter("succeeded")
        return result

    async def _until_cancel_delivered(self) -> None:
        """A job cancelled through the update closes as Canceled only once Temporal's own
        cancel request has reached it; the API sends that request right after the update."""
        if self._cancel_delivered or not workflow.patched(CLOSE_CANCELLED_AS_CANCELED):
            return
        with suppress(asyncio.TimeoutError):
            await workflow.wait_condition(
                lambda: self._cancel_delivered, timeout=CANCEL_DELIVERY_WAIT
            )

    # -- steps ----------------------------------------------------------------------------------
    def _enter(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(f"**Step:** {step}")

    def _stop_if_cancelled(self) -> None:
        """A safe point: a cancel that came while a step could not be interrupted (it finished
        anyway) or while undos ran unwinds here, before the next step, unless the job is past
        its point of no return or already unwinding."""
        if self._cancel_requested and self._no_return is None and self._deferred is None:
            raise asyncio.CancelledError()

    @overload
    async def _control(  # type: ignore[overload-overlap]
        self,
        activity: Callable[[Any, A], Awaitable[R2]],
        arg: A,
        summary: str,
        *,
        retry: RetryPolicy = CONTROL_RETRY,
    ) -> R2: ...

    @overload
    async def _control(
        self,
        activity: Callable[[Any, A], R2],
        arg: A,
        summary: str,
        *,
        retry: RetryPolicy = CONTROL_RETRY,
    ) -> R2: ...

    async def _control(
        self,
        activity: Callable[[Any, A], Any],
        arg: A,
        summary: str,
        *,
        retry: RetryPolicy = CONTROL_RETRY,
    ) -> Any:
        """A decision over the event store, on the control plane's own task queue."""
        self._stop_if_cancelled()
        result = await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=CONTROL_TIMEOUT,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=retry,
            summary=summary,
        )
        self._stop_if_cancelled()
        return result

    async def _hypervisor(
        self,
        activity: Callable[[Any, A], R2],
        arg: A,
        task_queue: str | None,
        summary: str,
        *,
        retry: RetryPolicy = HYPERVISOR_RETRY,
    ) -> R2:
        """A call to a hypervisor, on its cluster's task queue (its agent's, where it has one)."""
        self._stop_if_cancelled()
        result: R2 = await workflow.execute_activity_method(
            activity,  # type: ignore[arg-type]
            arg,
            task_queue=task_queue or workflow.info().task_queue,
            start_to_close_timeout=HYPERVISOR_TIMEOUT,
            heartbeat_timeout=HYPERVISOR_HEARTBEAT_TIMEOUT,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=retry,
            summary=summary,
        )
        self._stop_if_cancelled()
        return result

    async def _wait_for(
        self,
        activity: Callable[[Any, A], Awaitable[R2]],
        arg: A,
        summary: str,
        *,
        timeout: timedelta,
    ) -> R2:
        """A long wait on the control plane (for other jobs to end): it heartbeats, so a dead
        worker is noticed at once and a cancel reaches it, and may take up to `timeout`."""
        self._stop_if_cancelled()
        result: R2 = await workflow.execute_activity_method(
            activity,  # type: ignore[arg-type]
            arg,
            start_to_close_timeout=timeout,
            heartbeat_timeout=HYPERVISOR_HEARTBEAT_TIMEOUT,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=CONTROL_RETRY,
            summary=summary,
        )
        self._stop_if_cancelled()
        return result

    def _undo(self, activity: Callable[[Any, A], object], arg: A) -> Callable[[], Awaitable[None]]:
        async def undo() -> None:
            await self._control(activity, arg, f"undo: {_name(activity)}", retry=UNDO_RETRY)

        return undo

    def _hypervisor_undo(
        self, activity: Callable[[Any, A], object], arg: A, task_queue: str | None
    ) -> Callable[[], Awaitable[None]]:
        async def undo() -> None:
            await self._hypervisor(
                activity, arg, task_queue, f"undo: {_name(activity)}", retry=UNDO_RETRY
            )

        return undo

    async def _unwind_attempt(self, saga: Saga, names: tuple[str, ...]) -> None:
        """Give back what one attempt took (before the next host is tried): a cancel that
        comes meanwhile waits for these undos and takes effect at the next safe point."""
        self._deferred = "this attempt's undos are running"
        try:
            await saga.unwind(only=names)
        finally:
            self._deferred = None


def _name(activity: Callable[..., object]) -> str:
    return getattr(activity, "__name__", "step")
