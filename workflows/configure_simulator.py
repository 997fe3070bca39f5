"""ConfigureSimulator: an admin adds or removes a simulated fault, as a short job."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.simulator_configuration import SimulatorConfigurationActivities
    from domain.job_requests import SimulatorFaultChange

from workflows.job import JobWorkflow, no_failure_record


@workflow.defn(name="ConfigureSimulator")
class ConfigureSimulator(JobWorkflow[None]):
    @workflow.run
    async def run(self, change: SimulatorFaultChange) -> None:
        await self._execute(
            lambda saga: self._control(
                SimulatorConfigurationActivities.change_fault,
                change,
                "remove" if change.remove else f"{change.action} {change.operation}",
            ),
            record_failure=no_failure_record,
            waits_for_turn=False,
        )
