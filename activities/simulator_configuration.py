"""Recording simulator faults: the append behind configureSimulator."""

from __future__ import annotations

from temporalio import activity

from activities.errors import reports_cloud_errors
from domain.cloud import Cloud, Decision
from domain.job_requests import SimulatorFaultChange
from domain.simulator_fault import SIMULATOR_CONFIGURATION_ID, SimulatorConfiguration


def configuration_of(d: Decision) -> SimulatorConfiguration:
    found = d.find(SimulatorConfiguration, SIMULATOR_CONFIGURATION_ID)
    if found is None:
        found = d.add(SimulatorConfiguration.create_with_id(SIMULATOR_CONFIGURATION_ID))
    return found


class SimulatorConfigurationActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @activity.defn(name="simulator.change_fault")
    @reports_cloud_errors
    def change_fault(self, change: SimulatorFaultChange) -> None:
        command_id = f"{change.job_id}/change-fault"

        def decide(d: Decision) -> None:
            configuration = configuration_of(d)
            if change.remove:
                configuration.remove_fault(change.fault_id, command_id)
            else:
                configuration.add_fault(
                    change.fault_id,
                    change.operation,
                    change.action,
                    change.host_id,
                    change.delay_seconds,
                    change.error_code,
                    change.message,
                    command_id,
                )

        self.cloud.decide(decide)


def faults_from(cloud: Cloud) -> list[dict[str, object]]:
    """The faults in force, for the simulator driver (read on every simulated call)."""
    configuration = cloud.find(SimulatorConfiguration, SIMULATOR_CONFIGURATION_ID)
    return list(configuration.faults.values()) if configuration else []
