"""Power-state sync on the control plane: which hosts to list, and following their reports.

The listing itself is a driver-only activity (`hypervisor.report_power_states`) on the
cluster's task queue; these two read and append to the event store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from temporalio import activity

from activities.drivers.hypervisor import HostRef
from activities.errors import reports_cloud_errors
from activities.infrastructure_models import (
    ClusterHosts,
    PowerChangeRecord,
    ReconcileInput,
    ReconcileResult,
)
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.host import Host
from domain.power_state import HostReport, JobInProgress, SyncPolicy, reconcile_cluster


class PowerStateActivities:
    def __init__(self, cloud: Cloud, jobs: JobInProgress | None = None) -> None:
        self.cloud = cloud
        #: None: `JobRecords` over the event store (see domain.power_state).
        self.jobs = jobs

    @activity.defn(name="power_state.cluster_hosts")
    @reports_cloud_errors
    def cluster_hosts(self, cluster_id: UUID) -> ClusterHosts:
        cluster = self.cloud.load(Cluster, cluster_id)
        hosts = [self.cloud.load(Host, host_id) for host_id in cluster.host_ids]
        return ClusterHosts(
            cluster_id=cluster.id,
            cluster_name=cluster.name,
            hypervisor=cluster.hypervisor,
            task_queue=cluster.agent_task_queue,
            hosts=[
                HostRef(
                    host_id=str(host.id),
                    name=host.name,
                    address=host.address,
                    cluster_id=str(cluster.id),
                    hypervisor=host.hypervisor,
                )
                for host in hosts
            ],
        )

    @activity.defn(name="power_state.reconcile")
    @reports_cloud_errors
    def reconcile(self, given: ReconcileInput) -> ReconcileResult:
        reachable = [
            HostReport(
                host_id=UUID(report.host_id),
                vms={vm.vm_id: vm.power_state for vm in report.vms},
            )
            for report in given.reports
            if report.error is None
        ]
        outcome = reconcile_cluster(
            self.cloud,
            given.cluster_id,
            given.run_id,
            reachable,
            given.listed_at,
            datetime.now(UTC),
            policy=SyncPolicy(
                grace=timedelta(seconds=given.grace_seconds),
                clock_skew=timedelta(seconds=given.clock_skew_seconds),
            ),
            jobs=self.jobs,
        )
        return ReconcileResult(
            changes=[
                PowerChangeRecord(
                    vm_id=c.vm_id,
                    vm_name=c.vm_name,
                    vm_event=c.vm_event,
                    old_state=c.old_state,
                    new_state=c.new_state,
                    host_id=c.host_id,
                    reason=c.reason,
                )
                for c in outcome.changes
            ],
            crashed=outcome.crashed,
            skipped=outcome.skipped,
            unmanaged=outcome.unmanaged,
            unreachable_hosts=[r.host_name for r in given.reports if r.error is not None],
            summary=outcome.summary(),
        )
