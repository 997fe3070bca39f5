"""Host-HA activities on the control plane: which hosts a cluster's monitor watches, each
observation recorded on its host (the domain decides the HA state and what to do next), and
the HA job of a fenced host (its VMs stopped in the books, a start job per HA-enabled VM handed
to that VM's queue as the API hands jobs). The probes themselves run on the cluster's agent
(`hypervisor.check_host_health`, `hypervisor.check_vm_activity`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from temporalio import activity
from temporalio.client import Client

from activities.errors import reports_cloud_errors
from activities.host_ha_models import (
    CrashRestarts,
    FencedHostVms,
    HaConfigurationStep,
    HaObservation,
    RestartDone,
    RestartOutcome,
    RestartStep,
    RestartWave,
    StopFencedVms,
    WatchedHost,
    WatchedHosts,
)
from activities.host_maintenance import hand_over
from activities.host_maintenance_models import EvacuationSubmitted, VmOnTheHost
from activities.job_queue import ActivitiesWithClient, enqueue
from activities.refs import host_ref
from domain import host_ha_operations, vm_ha
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.host_ha_operations import VmToRestart


class HostHaActivities(ActivitiesWithClient):
    # -- configuration (a short admin job) --------------------------------------------------
    @activity.defn(name="ha.configure")
    @reports_cloud_errors
    def configure(self, step: HaConfigurationStep) -> dict[str, Any]:
        return host_ha_operations.configure(self.cloud, step.request, step.at)

    # -- the monitor ------------------------------------------------------------------------
    @activity.defn(name="ha.watched_hosts")
    @reports_cloud_errors
    def watched_hosts(self, cluster_id: UUID) -> WatchedHosts:
        settings, hosts = host_ha_operations.watched_hosts(self.cloud, cluster_id)
        cluster = self.cloud.load(Cluster, cluster_id)
        return WatchedHosts(
            settings=settings,
            zone_id=cluster.zone_id,
            task_queue=cluster.agent_task_queue,
            hosts=[
                WatchedHost(
                    host_id=h.host_id,
                    name=h.name,
                    ref=host_ref(self.cloud, h.host_id),
                    state=h.status.state.value,
                )
                for h in hosts
            ],
        )

    @activity.defn(name="ha.observe_health")
    @reports_cloud_errors
    def observe_health(self, seen: HaObservation) -> str:
        return host_ha_operations.observe_health(
            self.cloud, seen.host_id, seen.seen, seen.at, seen.command_id
        ).value

    @activity.defn(name="ha.observe_activity")
    @reports_cloud_errors
    def observe_activity(self, seen: HaObservation) -> str:
        return host_ha_operations.observe_activity(
            self.cloud, seen.host_id, seen.seen, seen.at, seen.command_id
        ).value

    @activity.defn(name="ha.record_recovery_sent")
    @reports_cloud_errors
    def record_recovery_sent(self, seen: HaObservation) -> None:
        host_ha_operations.record_recovery_sent(self.cloud, seen.host_id, seen.at, seen.command_id)

    @activity.defn(name="ha.record_fence")
    @reports_cloud_errors
    def record_fence(self, seen: HaObservation) -> str:
        return host_ha_operations.record_fence(
            self.cloud, seen.host_id, seen.seen, seen.why, seen.at, seen.command_id
        ).value

    # -- the HA job of a fenced host --------------------------------------------------------
    @activity.defn(name="ha.begin_restart")
    @reports_cloud_errors
    def begin_restart(self, step: RestartStep) -> FencedHostVms:
        request = step.request
        if request.declared_by is not None:
            host_ha_operations.declare_fenced(
                self.cloud,
                request.host_id,
                request.declared_by,
                step.submitted_at,
                f"{request.job_id}/declared",
            )
        name, vms = host_ha_operations.begin_restart(
            self.cloud,
            request.job_id,
            request.account_id,
            request.host_id,
            request.summary,
            step.submitted_at,
        )
        return FencedHostVms(host_name=name, vms=[_on_host(vm) for vm in vms])

    @activity.defn(name="ha.stop_vms")
    @reports_cloud_errors
    def stop_vms(self, stop: StopFencedVms) -> None:
        host_ha_operations.stop_vms_of_fenced_host(
            self.cloud, stop.job_id, stop.host_id, stop.vm_ids
        )

    @activity.defn(name="ha.submit_restarts")
    async def submit_restarts(self, wave: RestartWave) -> EvacuationSubmitted:
        """A start job per HA-enabled VM, each in its VM's queue; the job ids derive from the
        HA job's, so a retried step submits the same jobs again, which their queues know."""
        jobs = []
        for vm in wave.vms:
            queue, submission = host_ha_operations.restart_of(
                wave.job_id,
                wave.host_name,
                VmToRestart(vm.vm_id, vm.name, vm.account_id, vm.zone_id, vm.ha_enabled),
            )
            jobs.append((queue, submission, vm))
        return await hand_over(self.client, self.cloud, jobs, wave.task_queue)

    # -- VM HA: a VM that crashed on a healthy host ---------------------------------------
    @activity.defn(name="ha.restart_crashed_vms")
    async def restart_crashed_vms(self, given: CrashRestarts) -> list[str]:
        """A start job per VM into its queue (ids from the sync pass: a retry hands the same
        jobs, which the queues know); answers the job ids."""
        handed = []
        for vm in given.vms:
            queue, submission = vm_ha.crash_restart_of(given.sync_run_id, vm)
            await enqueue(self.client, self.cloud, queue, submission, given.task_queue)
            activity.heartbeat(f"handed {submission.job_id} to {queue.workflow_id}")
            handed.append(str(submission.job_id))
        return handed

    @activity.defn(name="ha.complete_restart")
    @reports_cloud_errors
    def complete_restart(self, done: RestartDone) -> dict[str, Any]:
        result = done.result
        return host_ha_operations.complete_restart(
            self.cloud,
            done.job_id,
            UUID(str(result["host_id"])),
            [UUID(str(vm_id)) for vm_id in result.get("not_restarted", [])],
            result,
            datetime.now(UTC),
        )

    @activity.defn(name="ha.fail_restart")
    @reports_cloud_errors
    def fail_restart(self, outcome: RestartOutcome) -> None:
        request = outcome.request
        host_ha_operations.fail_restart(
            self.cloud,
            request.job_id,
            request.account_id,
            request.host_id,
            request.summary,
            outcome.submitted_at,
            outcome.error_code,
            outcome.error_text,
            outcome.cancelled,
        )


def _on_host(vm: VmToRestart) -> VmOnTheHost:
    return VmOnTheHost(
        vm_id=vm.vm_id,
        name=vm.name,
        account_id=vm.account_id,
        zone_id=vm.zone_id,
        ha_enabled=vm.ha_enabled,
    )


def host_ha_activities(cloud: Cloud, client: Client | None = None) -> list[Any]:
    ha = HostHaActivities(cloud, client)
    return [
        ha.configure,
        ha.watched_hosts,
        ha.observe_health,
        ha.observe_activity,
        ha.record_recovery_sent,
        ha.record_fence,
        ha.begin_restart,
        ha.stop_vms,
        ha.submit_restarts,
        ha.restart_crashed_vms,
        ha.complete_restart,
        ha.fail_restart,
    ]
