"""Out-of-band management jobs: ConfigureOutOfBandManagement (a short admin job that records a
host's BMC driver and address, and enables or disables power actions) and
IssueOutOfBandManagementPowerAction (ON, OFF, CYCLE, RESET, SOFT or STATUS through the host's
BMC, on the worker that holds its login; what the BMC then reports is recorded on the host).

A power action cannot be taken back: once the BMC is asked, the job is past its point of no
return, and a failure only records why. Asking and reading are two steps: a CYCLE or a RESET is
sent at most once (a retry would cycle the machine again), while reading the state back is
retried. A machine that does not reach the state its action leads to (ON, OFF, SOFT) within the
settle time fails the job with 534, after what the BMC reported is recorded.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.out_of_band import BmcActivities, OutOfBandActivities
    from activities.out_of_band_models import (
        BmcTarget,
        PowerActionOutcome,
        PowerActionStep,
        PowerReading,
        PowerRecorded,
    )
    from domain.errors import ErrorCode
    from domain.out_of_band import (
        CONFIGURE_JOB,
        POWER_ACTION_JOB,
        OutOfBandConfiguration,
        PowerActionRequest,
    )

from workflows.job import JobWorkflow, no_failure_record
from workflows.retry_policies import PROBE_RETRY

#: Actions that must not be sent twice, and the retry policy that sends them once.
NOT_REPEATABLE = frozenset({"CYCLE", "RESET"})
SENT_ONCE = RetryPolicy(maximum_attempts=1)


@workflow.defn(name=CONFIGURE_JOB)
class ConfigureOutOfBandManagement(JobWorkflow[dict[str, Any]]):
    @workflow.run
    async def run(self, request: OutOfBandConfiguration) -> dict[str, Any]:
        return await self._execute(
            lambda saga: self._control(
                OutOfBandActivities.configure,
                request,
                "record the host's out-of-band management",
            ),
            record_failure=no_failure_record,
            waits_for_turn=False,
        )


@workflow.defn(name=POWER_ACTION_JOB)
class IssueOutOfBandManagementPowerAction(JobWorkflow[dict[str, Any]]):
    @workflow.run
    async def run(self, request: PowerActionRequest) -> dict[str, Any]:
        submitted_at = workflow.info().start_time
        return await self._execute_recorded(
            lambda saga: self._act(request),
            fail=OutOfBandActivities.fail,
            outcome=lambda code, text, cancelled: PowerActionOutcome(
                request=request,
                submitted_at=submitted_at,
                error_code=code,
                error_text=text,
                cancelled=cancelled,
            ),
            waits_for_turn=False,
        )

    async def _act(self, request: PowerActionRequest) -> dict[str, Any]:
        self._enter("checking the host's out-of-band management")
        target: BmcTarget = await self._control(
            OutOfBandActivities.begin_power_action,
            PowerActionStep(request=request, submitted_at=workflow.info().start_time),
            "check the host's BMC may be asked",
        )
        if target.action != "STATUS":
            self._enter(f"power {target.action} through the BMC at {target.address}")
            self._no_return = "the BMC has been asked"
            await self._hypervisor(
                BmcActivities.send_power_action,
                target,
                target.task_queue,
                f"power {target.action} {target.host_name} through its BMC ({target.address})",
                # A cycle or a reset asked twice would cycle the machine twice: once only.
                retry=SENT_ONCE if target.action in NOT_REPEATABLE else PROBE_RETRY,
            )
        self._enter("reading the power state")
        reading: PowerReading = await self._hypervisor(
            BmcActivities.read_power_state,
            target,
            target.task_queue,
            f"read the power of {target.host_name} from its BMC",
            retry=PROBE_RETRY,
        )
        self._enter(f"recording power {reading.power_state}")
        result: dict[str, Any] = await self._control(
            OutOfBandActivities.record_power,
            PowerRecorded(
                job_id=request.job_id,
                host_id=request.host_id,
                action=target.action,
                power_state=reading.power_state,
                settled=reading.settled,
            ),
            f"record {target.host_name} powered {reading.power_state}",
        )
        if not reading.settled:
            raise ApplicationError(
                f"power {target.action}: the BMC of {target.host_name} still reports "
                f"{reading.power_state}",
                int(ErrorCode.RESOURCE_UNAVAILABLE),
                type="PowerStateNotReached",
                non_retryable=True,
            )
        return result


OUT_OF_BAND_WORKFLOWS: tuple[type, ...] = (
    ConfigureOutOfBandManagement,
    IssueOutOfBandManagementPowerAction,
)
