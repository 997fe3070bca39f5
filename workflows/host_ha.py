"""Host HA: a monitor per cluster, and the HA job of a fenced host.

HostHaMonitor (`host-ha/<cluster id>`, started by the API when HA is switched on for a host of
the cluster; it ends when none is watched any more) runs a pass every `monitor_interval`:

1. `ha.watched_hosts`: the cluster's HA-enabled hosts in service, and its kvm.ha settings;
2. `hypervisor.check_host_health` on the cluster's agent: does each host answer in time?
3. `ha.observe_health` per host: the domain moves the host in CloudStack's HA machine
   (domain/host_ha.py) and says what to do next;
4. what it says, for each host apart (a fence waiting on one BMC never delays another host's
   checks; a host whose last action is still in hand is left to it): an activity check
   (`hypervisor.check_vm_activity`: do the host's VMs still show life by another path?), a
   recovery (a power CYCLE job through the BMC), or a fence (a power OFF job, which only
   succeeds once the BMC reads the host back as off). Those power jobs are child jobs, audited
   like an operator's; a fence that is not confirmed leaves the host Fencing and is tried
   again later, longer each time;
5. a host Fenced starts its HA job (RestartVmsOfFencedHost, a child left running on its own).

Nothing is restarted before the host is Fenced: a host that stops answering while its VMs still
run (a partition) stays Degraded, and a BMC that cannot be reached never counts as off.

RestartVmsOfFencedHost (a job on the shared base; also started by `declare-fenced`) stops the
fenced host's VMs in the books (their room released) and hands a start job per HA-enabled VM to
its queue (planned elsewhere: a fenced host takes no VM; `ha` hosts take these), then waits for
them; non-HA VMs stay Stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid5

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.host_ha import HostHaActivities
    from activities.host_ha_models import (
        ActivityProbe,
        FencedHostVms,
        HaConfigurationStep,
        HaObservation,
        HealthProbe,
        HealthReport,
        RestartDone,
        RestartOutcome,
        RestartStep,
        RestartWave,
        StopFencedVms,
        WatchedHost,
        WatchedHosts,
    )
    from activities.host_maintenance import HostMaintenanceActivities
    from activities.host_maintenance_models import EvacuationEnded, EvacuationSubmitted
    from activities.hypervisor import HypervisorActivities
    from domain.host_ha import HaAction
    from domain.host_ha_operations import (
        CHECK_NOW_SIGNAL,
        CONFIGURE_HA_JOB,
        MONITOR_WORKFLOW,
        RESTART_JOB,
        HaConfiguration,
        HostHaMonitorInput,
        RestartVmsRequest,
    )
    from domain.job_requests import JobAttribute
    from domain.out_of_band import POWER_ACTION_JOB, PowerActionRequest

from workflows.job import JobWorkflow, no_failure_record
from workflows.retry_policies import CONTROL_RETRY, PROBE_RETRY

#: How long the HA job waits for its restarts.
RESTARTS_TIMEOUT = timedelta(hours=2)
#: The patch that watches each host apart (recorded histories watched a pass's hosts in turn).
WATCH_HOSTS_APART_PATCH = "ha-watch-hosts-apart"


def job_search_attributes(
    job_type: str, account_id: UUID, host_id: UUID, zone_id: UUID | None
) -> TypedSearchAttributes:
    values = {
        JobAttribute.JOB_TYPE: job_type,
        JobAttribute.JOB_STATE: "queued",
        JobAttribute.ACCOUNT_ID: str(account_id),
        JobAttribute.RESOURCE_TYPE: "Host",
        JobAttribute.RESOURCE_ID: str(host_id),
    }
    if zone_id is not None:
        values[JobAttribute.ZONE_ID] = str(zone_id)
    return TypedSearchAttributes(
        [SearchAttributePair(SearchAttributeKey.for_keyword(a.value), v) for a, v in values.items()]
    )


@workflow.defn(name=MONITOR_WORKFLOW)
class HostHaMonitor:
    def __init__(self) -> None:
        self._wake = False
        self._last = "no pass yet"
        #: Each host's work in hand (its checks, a recovery or a fence), and how it last ended.
        self._working: dict[UUID, asyncio.Task[None]] = {}
        self._ended: dict[UUID, str] = {}

    @workflow.signal(name=CHECK_NOW_SIGNAL)
    def check_now(self) -> None:
        self._wake = True

    @workflow.query(name="last_pass")
    def last_pass(self) -> str:
        return self._last

    @workflow.run
    async def run(self, state: HostHaMonitorInput) -> str:
        passes = state.passes
        interval = 0.0  # the first pass at once
        for _ in range(state.passes_per_run):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._wake, timeout=timedelta(seconds=interval)
                )
            self._wake = False
            passes += 1
            watched = await self._pass(state, passes)
            interval = watched.settings.monitor_interval
            workflow.set_current_details(
                f"**Cluster:** `{state.cluster_id}`  \n**Pass {passes}:** {self._last}"
            )
            if not watched.hosts and not self._wake and not self._busy():
                return f"no host of cluster {state.cluster_id} has HA enabled: monitor ended"
            if workflow.info().is_continue_as_new_suggested():
                break
        await asyncio.gather(*self._working.values())  # no host's work is cut off half-way
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(state.model_copy(update={"passes": passes}))

    def _busy(self) -> list[UUID]:
        return [host_id for host_id, task in self._working.items() if not task.done()]

    async def _pass(self, state: HostHaMonitorInput, number: int) -> WatchedHosts:
        watched: WatchedHosts = await workflow.execute_activity_method(
            HostHaActivities.watched_hosts,
            state.cluster_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=CONTROL_RETRY,
            summary="which hosts to watch",
        )
        if not watched.hosts:
            self._last = "no host has HA enabled"
            return watched
        settings = watched.settings
        queue = watched.task_queue or workflow.info().task_queue
        try:
            report: HealthReport = await workflow.execute_activity_method(
                HypervisorActivities.check_host_health,
                HealthProbe(
                    hosts=[h.ref for h in watched.hosts],
                    timeout_seconds=settings.health_check_timeout,
                ),
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=settings.health_check_timeout + 30),
                schedule_to_close_timeout=timedelta(seconds=settings.health_check_timeout + 60),
                retry_policy=PROBE_RETRY,
                summary=f"health-check {len(watched.hosts)} hosts ({queue})",
            )
        except ActivityError as error:
            # The agent itself did not answer: nothing is learnt of any host this pass.
            self._last = f"the cluster's agent did not answer: {error.cause}"
            return watched

        def watch(host: WatchedHost) -> Awaitable[str]:
            healthy = report.healthy.get(str(host.host_id), False)
            return self._watch(state, watched, host, healthy, number)

        if not workflow.patched(WATCH_HOSTS_APART_PATCH):
            ends = [await watch(host) for host in watched.hosts]  # in turn, as recorded
            self._last = ", ".join(
                f"{host.name} {end}" for host, end in zip(watched.hosts, ends, strict=True)
            )
            return watched
        # Each host on its own: a fence waiting on one BMC holds up no other host's checks, and
        # a host whose work is still in hand (a fence under way) is left to it this pass.
        busy = set(self._busy())
        for host in watched.hosts:
            if host.host_id not in busy:
                self._working[host.host_id] = asyncio.create_task(self._watch_apart(watch, host))
        self._last = ", ".join(
            f"{host.name} {self._ended.get(host.host_id, 'being checked')}"
            + (" (its last action still in hand)" if host.host_id in busy else "")
            for host in watched.hosts
        )
        return watched

    async def _watch_apart(
        self, watch: Callable[[WatchedHost], Awaitable[str]], host: WatchedHost
    ) -> None:
        """One host's work of a pass; a step that failed for good is this host's trouble only
        (recorded, and the next pass looks again), never the monitor's end."""
        try:
            self._ended[host.host_id] = await watch(host)
        except (ActivityError, ChildWorkflowError) as error:
            workflow.logger.warning("HA work on host %s failed: %s", host.name, error.cause)
            self._ended[host.host_id] = f"check failed: {error.cause}"

    async def _watch(
        self,
        state: HostHaMonitorInput,
        watched: WatchedHosts,
        host: WatchedHost,
        healthy: bool,
        number: int,
    ) -> str:
        """Record the host's health, then do what the domain says, until it says nothing."""
        # The run id keeps command ids unique when a monitor that ended is started again.
        command = f"host-ha/{workflow.info().run_id}/{number}/{host.host_id}"

        async def observe(
            activity: Any, what: str, summary: str, seen: bool = False, why: str = ""
        ) -> HaAction:
            answer = await self._control(
                activity,
                HaObservation(
                    host_id=host.host_id,
                    at=workflow.now(),
                    command_id=f"{command}/{what}",
                    seen=seen,
                    why=why,
                ),
                f"{host.name}: {summary}",
            )
            return HaAction(answer) if answer is not None else HaAction.NONE

        action = await observe(
            HostHaActivities.observe_health,
            "health",
            "healthy" if healthy else "no answer",
            seen=healthy,
        )
        if action is HaAction.CHECK_ACTIVITY:
            active: bool = await workflow.execute_activity_method(
                HypervisorActivities.check_vm_activity,
                ActivityProbe(
                    host=host.ref, timeout_seconds=watched.settings.activity_check_timeout
                ),
                task_queue=watched.task_queue or workflow.info().task_queue,
                start_to_close_timeout=timedelta(
                    seconds=watched.settings.activity_check_timeout + 30
                ),
                retry_policy=PROBE_RETRY,
                summary=f"{host.name}: do its VMs still show activity?",
            )
            action = await observe(
                HostHaActivities.observe_activity,
                "activity",
                f"activity {'seen' if active else 'not seen'}",
                seen=active,
            )
        if action is HaAction.RECOVER:
            await self._power(state, watched, host, "CYCLE", f"{command}/recover")
            await observe(HostHaActivities.record_recovery_sent, "recovered", "power cycle sent")
            return "Recovering"
        if action is HaAction.FENCE:
            confirmed, why = await self._power(state, watched, host, "OFF", f"{command}/fence")
            action = await observe(
                HostHaActivities.record_fence,
                "fenced",
                f"fence {'confirmed' if confirmed else 'not confirmed'}",
                seen=confirmed,
                why=why,
            )
        if action is HaAction.RESTART_VMS:
            job_id = uuid5(host.host_id, f"ha-restart/{command}")
            await workflow.start_child_workflow(
                RESTART_JOB,
                RestartVmsRequest(
                    job_id=job_id,
                    account_id=state.account_id,
                    host_id=host.host_id,
                    summary=f"Restart the HA VMs of fenced host {host.name}",
                ),
                id=str(job_id),
                task_queue=workflow.info().task_queue,
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=job_search_attributes(
                    RESTART_JOB, state.account_id, host.host_id, watched.zone_id
                ),
                static_summary=f"HA: restart the VMs of fenced host {host.name}",
            )
            return "Fenced"
        return action.value

    async def _power(
        self,
        state: HostHaMonitorInput,
        watched: WatchedHosts,
        host: WatchedHost,
        action: str,
        command: str,
    ) -> tuple[bool, str]:
        """A power action job on the host's BMC, as a child: whether it reached its state."""
        job_id = uuid5(host.host_id, command)
        verb = "fence" if action == "OFF" else "recover"
        try:
            result: dict[str, Any] = await workflow.execute_child_workflow(
                POWER_ACTION_JOB,
                PowerActionRequest(
                    job_id=job_id,
                    account_id=state.account_id,
                    host_id=host.host_id,
                    action=action,
                    summary=f"HA: power {action} host {host.name} to {verb} it",
                ),
                id=str(job_id),
                task_queue=workflow.info().task_queue,
                search_attributes=job_search_attributes(
                    POWER_ACTION_JOB, state.account_id, host.host_id, watched.zone_id
                ),
                static_summary=f"HA: power {action} {host.name} ({verb})",
            )
        except ChildWorkflowError as error:
            return False, str(error.cause or error)
        return True, f"the BMC reports {host.name} {result.get('power_state', 'off')}"

    async def _control(self, activity: Any, arg: Any, summary: str) -> Any:
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=CONTROL_RETRY,
            summary=summary,
        )


@workflow.defn(name=RESTART_JOB)
class RestartVmsOfFencedHost(JobWorkflow[dict[str, Any]]):
    @workflow.run
    async def run(self, request: RestartVmsRequest) -> dict[str, Any]:
        submitted_at = workflow.info().start_time
        return await self._execute_recorded(
            lambda saga: self._restart(request),
            fail=HostHaActivities.fail_restart,
            outcome=lambda code, text, cancelled: RestartOutcome(
                request=request,
                submitted_at=submitted_at,
                error_code=code,
                error_text=text,
                cancelled=cancelled,
            ),
            waits_for_turn=False,
        )

    async def _restart(self, request: RestartVmsRequest) -> dict[str, Any]:
        self._enter("reading the fenced host's VMs")
        found: FencedHostVms = await self._control(
            HostHaActivities.begin_restart,
            RestartStep(request=request, submitted_at=workflow.info().start_time),
            "record the HA job and read the fenced host's VMs",
        )
        host = found.host_name
        self._enter(f"stopping the {len(found.vms)} VM(s) of {host} in the books")
        await self._control(
            HostHaActivities.stop_vms,
            StopFencedVms(
                job_id=request.job_id,
                host_id=request.host_id,
                vm_ids=[vm.vm_id for vm in found.vms],
            ),
            f"record {host}'s VMs Stopped and release their room",
        )
        ha = [vm for vm in found.vms if vm.ha_enabled]
        ends: dict[str, str] = {}
        if ha:
            self._enter(f"restarting {len(ha)} HA VM(s) elsewhere")
            submitted: EvacuationSubmitted = await self._control(
                HostHaActivities.submit_restarts,
                RestartWave(
                    job_id=request.job_id,
                    host_name=host,
                    vms=ha,
                    task_queue=workflow.info().task_queue,
                ),
                f"submit a start job for each of {len(ha)} HA VM(s)",
            )
            ended: EvacuationEnded = await self._wait_for(
                HostMaintenanceActivities.await_evacuation,
                submitted,
                f"wait for the start jobs of {len(ha)} HA VM(s)",
                timeout=RESTARTS_TIMEOUT,
            )
            ends = {str(end.vm_id): end.status for end in ended.ends}
        result = {
            "host_id": str(request.host_id),
            "restarted": sorted(v for v, status in ends.items() if status == "succeeded"),
            "not_restarted": sorted(v for v, status in ends.items() if status != "succeeded"),
            "stopped": sorted(str(vm.vm_id) for vm in found.vms if not vm.ha_enabled),
        }
        self._enter("recording the outcome")
        done: dict[str, Any] = await self._control(
            HostHaActivities.complete_restart,
            RestartDone(job_id=request.job_id, result=result),
            "record the HA job's outcome",
        )
        return done


@workflow.defn(name=CONFIGURE_HA_JOB)
class ConfigureHostHa(JobWorkflow[dict[str, Any]]):
    """HA on or off for a host, or a cluster's kvm.ha settings (a short admin job)."""

    @workflow.run
    async def run(self, request: HaConfiguration) -> dict[str, Any]:
        return await self._execute(
            lambda saga: self._control(
                HostHaActivities.configure,
                HaConfigurationStep(request=request, at=workflow.now()),
                f"record the HA of {request.resource_type.lower()} {request.resource_id}",
            ),
            record_failure=no_failure_record,
            waits_for_turn=False,
        )


HOST_HA_WORKFLOWS: tuple[type, ...] = (HostHaMonitor, RestartVmsOfFencedHost, ConfigureHostHa)
