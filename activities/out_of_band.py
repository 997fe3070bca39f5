"""Out-of-band management activities: the decisions over the event store (control plane), and
the power action itself, run by the worker that holds the BMC logins (the cluster's agent, or
the control plane for a cluster without one)."""

from __future__ import annotations

import time
from typing import Any

from temporalio import activity

from activities.drivers.hypervisor import DriverError
from activities.drivers.out_of_band import IpmiPowerControl
from activities.errors import reports_cloud_errors
from activities.heartbeat import heartbeating
from activities.out_of_band_models import (
    BmcTarget,
    PowerActionOutcome,
    PowerActionStep,
    PowerReading,
    PowerRecorded,
)
from domain import out_of_band
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.out_of_band import OutOfBandConfiguration, PowerState

#: How long one attempt to begin a power action waits for the host's BMC to be free (within
#: the control plane's activity timeout), and how often it looks.
BUSY_WAIT_SECONDS = 30.0
BUSY_POLL_SECONDS = 0.25


class OutOfBandActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @activity.defn(name="oobm.configure")
    @reports_cloud_errors
    def configure(self, request: OutOfBandConfiguration) -> dict[str, Any]:
        return out_of_band.configure(self.cloud, request)

    @activity.defn(name="oobm.begin_power_action")
    @reports_cloud_errors
    def begin_power_action(self, step: PowerActionStep) -> BmcTarget:
        """Record the job and claim the host's BMC, waiting up to `BUSY_WAIT_SECONDS` for
        another power action to end (then Temporal retries, and at last the job fails 536)."""
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                host, action = out_of_band.begin_power_action(
                    self.cloud, step.request, step.submitted_at
                )
                break
            except out_of_band.PowerActionsBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(BUSY_POLL_SECONDS)
        cluster = self.cloud.find(Cluster, host.cluster_id)
        assert host.oobm_driver is not None and host.oobm_address is not None
        return BmcTarget(
            host_id=host.id,
            host_name=host.name,
            driver=host.oobm_driver,
            address=host.oobm_address,
            action=action.value,
            task_queue=cluster.agent_task_queue if cluster is not None else None,
        )

    @activity.defn(name="oobm.record_power")
    @reports_cloud_errors
    def record_power(self, recorded: PowerRecorded) -> dict[str, Any]:
        return out_of_band.record_power(
            self.cloud,
            recorded.job_id,
            recorded.host_id,
            recorded.action,
            recorded.power_state,
            settled=recorded.settled,
        )

    @activity.defn(name="oobm.fail")
    @reports_cloud_errors
    def fail(self, outcome: PowerActionOutcome) -> None:
        out_of_band.fail_power_action(
            self.cloud,
            outcome.request,
            outcome.submitted_at,
            outcome.error_code,
            outcome.error_text,
            outcome.cancelled,
        )


class BmcActivities:
    """The BMC side: on the worker that holds the logins."""

    def __init__(self, control: IpmiPowerControl) -> None:
        self.control = control

    @activity.defn(name="oobm.send_power_action")
    @reports_cloud_errors
    def send_power_action(self, target: BmcTarget) -> None:
        """Ask the BMC for the action. Not idempotent for CYCLE and RESET: the workflow runs
        those at most once."""
        _check_driver(target)
        with heartbeating(f"{target.action} through the BMC of {target.host_name}"):
            self.control.send(target.host_name, target.address, target.action)

    @activity.defn(name="oobm.read_power_state")
    @reports_cloud_errors
    def read_power_state(self, target: BmcTarget) -> PowerReading:
        """The power state (On or Off) the BMC reports once the action took effect."""
        _check_driver(target)
        with heartbeating(f"reading the power of {target.host_name} from its BMC"):
            state, settled = self.control.settle(target.host_name, target.address, target.action)
        return PowerReading(
            power_state=(PowerState.ON if state == "on" else PowerState.OFF).value,
            settled=settled,
        )


def _check_driver(target: BmcTarget) -> None:
    if target.driver != "ipmitool":
        raise DriverError(f"no out-of-band driver {target.driver!r} on this worker")


def out_of_band_activities(cloud: Cloud) -> list[Any]:
    oobm = OutOfBandActivities(cloud)
    return [oobm.configure, oobm.begin_power_action, oobm.record_power, oobm.fail]


def bmc_activities(control: IpmiPowerControl) -> list[Any]:
    bmc = BmcActivities(control)
    return [bmc.send_power_action, bmc.read_power_state]
