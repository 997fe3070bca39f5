"""ConfigureSimulator: an admin adds or removes a simulated fault, as a short job."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.simulator_configuration import SimulatorConfigurationActivities
    from domain.job_requests import SimulatorFaultChange

from workflows.job_state import set_job_state


@workflow.defn(name="ConfigureSimulator")
class ConfigureSimulator:
    @workflow.run
    async def run(self, change: SimulatorFaultChange) -> None:
        set_job_state("running")
        try:
            await workflow.execute_activity_method(
                SimulatorConfigurationActivities.change_fault,
                change,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
                summary=("remove" if change.remove else f"{change.action} {change.operation}"),
            )
        except Exception:
            set_job_state("failed")
            raise
        set_job_state("succeeded")
