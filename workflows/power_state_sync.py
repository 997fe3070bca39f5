"""PowerStateSync: one long-running workflow per cluster comparing what its hypervisors report
with the domain, every `interval_seconds` (default 60).

Why a workflow with a durable timer loop rather than a Temporal Schedule: the AddCluster job
starts it as an abandoned child, deterministically and idempotently (one id per cluster), with
no extra client call from the API; passes can never overlap (they run one after the other in
one workflow); an operator can ask for a pass at once (`sync_now`, an update that answers with
the pass's outcome) or read the last outcome (`last_pass` query, and the workflow's current
details in the web UI); and the pass counter that makes sync run ids unique carries over
continue-as-new (every `passes_per_run` passes, or when Temporal suggests it).

A pass: `power_state.cluster_hosts` (control plane) → `hypervisor.report_power_states` on the
cluster's task queue (the agent, which holds the credentials) → `power_state.reconcile`
(control plane, appends `FollowAgentPowerOnReport`/`FollowAgentPowerOffReport`) → for each
HA-enabled VM the pass found stopped without a stop job, `ha.restart_crashed_vms` hands a
start job to the VM's queue (VM HA, domain/vm_ha.py). A pass whose agent does not answer
records nothing and the loop goes on.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.host_ha import HostHaActivities
    from activities.host_ha_models import CrashRestarts
    from activities.hypervisor import HypervisorActivities
    from activities.infrastructure_models import (
        ClusterHosts,
        PowerReports,
        ReconcileInput,
        ReconcileResult,
    )
    from activities.power_state import PowerStateActivities
    from domain.infrastructure import PowerStateSyncInput

from workflows.retry_policies import CONTROL_RETRY, PROBE_RETRY, UNDO_RETRY

#: The patch that added VM HA's restarts to a pass (histories recorded before replay without).
VM_HA_PATCH = "vm-ha-restart"


@workflow.defn(name="PowerStateSync")
class PowerStateSync:
    def __init__(self) -> None:
        self._wake = False
        self._completed = 0
        self._running_pass = False
        self._last = ReconcileResult(summary="no pass yet")

    @workflow.signal(name="sync_now_signal")
    def wake(self) -> None:
        """Run a pass now instead of at the end of the interval."""
        self._wake = True

    @workflow.update(name="sync_now")
    async def sync_now(self) -> ReconcileResult:
        """Run a pass now and answer with its outcome (a pass already running does not count:
        its listing may predate the request)."""
        target = self._completed + (2 if self._running_pass else 1)
        self._wake = True
        await workflow.wait_condition(lambda: self._completed >= target)
        return self._last

    @workflow.query(name="last_pass")
    def last_pass(self) -> ReconcileResult:
        return self._last

    @workflow.query(name="passes_completed")
    def passes_completed(self) -> int:
        return self._completed

    @workflow.run
    async def run(self, state: PowerStateSyncInput) -> None:
        self._completed = state.passes_completed
        workflow.set_current_details(
            f"**Cluster:** `{state.cluster_id}`  \nEvery {state.interval_seconds:g} s; "
            f"transitional grace {state.grace_seconds:g} s"
        )
        for _ in range(state.passes_per_run):
            with contextlib.suppress(TimeoutError):  # the interval is up
                await workflow.wait_condition(
                    lambda: self._wake, timeout=timedelta(seconds=state.interval_seconds)
                )
            self._wake = False
            self._running_pass = True
            self._last = await self._pass(state, self._completed + 1)
            self._running_pass = False
            self._completed += 1
            workflow.set_current_details(
                f"**Cluster:** `{state.cluster_id}`  \n**Pass {self._completed}:** "
                f"{self._last.summary}"
            )
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(state.model_copy(update={"passes_completed": self._completed}))

    async def _pass(self, state: PowerStateSyncInput, number: int) -> ReconcileResult:
        run_id = f"{workflow.info().workflow_id}/{number}"
        try:
            cluster: ClusterHosts = await workflow.execute_activity_method(
                PowerStateActivities.cluster_hosts,
                state.cluster_id,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=CONTROL_RETRY,
                summary="which hosts to list",
            )
            if not cluster.hosts:
                return ReconcileResult(summary="the cluster has no hosts")
            listed_at = workflow.now()
            queue = cluster.task_queue or workflow.info().task_queue
            listing: PowerReports = await workflow.execute_activity_method(
                HypervisorActivities.report_power_states,
                cluster,
                task_queue=queue,
                start_to_close_timeout=timedelta(minutes=5),
                schedule_to_close_timeout=timedelta(seconds=max(120.0, 2 * state.interval_seconds)),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=PROBE_RETRY,
                summary=f"list VMs and power states on {len(cluster.hosts)} hosts ({queue})",
            )
            result: ReconcileResult = await workflow.execute_activity_method(
                PowerStateActivities.reconcile,
                ReconcileInput(
                    cluster_id=state.cluster_id,
                    run_id=run_id,
                    reports=listing.reports,
                    listed_at=listed_at,
                    grace_seconds=state.grace_seconds,
                    clock_skew_seconds=state.clock_skew_seconds,
                ),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=CONTROL_RETRY,
                summary="follow the hypervisors' power reports",
            )
            if result.crashed and workflow.patched(VM_HA_PATCH):
                # Patient: the VMs are stopped in the books already, and only this restarts them.
                await workflow.execute_activity_method(
                    HostHaActivities.restart_crashed_vms,
                    CrashRestarts(
                        sync_run_id=run_id,
                        vms=result.crashed,
                        task_queue=workflow.info().task_queue,
                    ),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=UNDO_RETRY,
                    summary=f"HA: restart {len(result.crashed)} VM(s) that stopped on their own",
                )
            return result
        except ActivityError as error:
            workflow.logger.warning("power-state pass %s failed: %s", run_id, error.cause)
            return ReconcileResult(summary=f"pass failed, nothing recorded: {error.cause}")
