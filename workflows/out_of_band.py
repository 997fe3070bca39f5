"""Out-of-band management jobs: ConfigureOutOfBandManagement (a short admin job that records a
host's BMC driver and address, and enables or disables power actions) and
IssueOutOfBandManagementPowerAction (ON, OFF, CYCLE, RESET, SOFT or STATUS through the host's
BMC, on the worker that holds its login; what the BMC then reports is recorded on the host).

A power action cannot be taken back: once the BMC is asked, the job is past its point of no
return, and a failure only records why.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.out_of_band import BmcActivities, OutOfBandActivities
    from activities.out_of_band_models import (
        BmcTarget,
        PowerActionOutcome,
        PowerActionStep,
        PowerRecorded,
    )
    from domain.out_of_band import (
        CONFIGURE_JOB,
        POWER_ACTION_JOB,
        OutOfBandConfiguration,
        PowerActionRequest,
    )

from workflows.job import JobWorkflow, no_failure_record
from workflows.retry_policies import PROBE_RETRY


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
        self._enter(f"power {target.action} through the BMC at {target.address}")
        self._no_return = "the BMC has been asked"
        power_state: str = await self._hypervisor(
            BmcActivities.power,
            target,
            target.task_queue,
            f"power {target.action} {target.host_name} through its BMC ({target.address})",
            retry=PROBE_RETRY,
        )
        self._enter(f"recording power {power_state}")
        return await self._control(
            OutOfBandActivities.record_power,
            PowerRecorded(
                job_id=request.job_id,
                host_id=request.host_id,
                action=target.action,
                power_state=power_state,
            ),
            f"record {target.host_name} powered {power_state}",
        )


OUT_OF_BAND_WORKFLOWS: tuple[type, ...] = (
    ConfigureOutOfBandManagement,
    IssueOutOfBandManagementPowerAction,
)
