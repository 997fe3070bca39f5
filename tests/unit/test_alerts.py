"""Alerts on the in-memory event store: raised inside the decision that causes them, once per
cause however often its step runs, and archived once. Also VM HA's part of the power-state
sync: an HA VM found stopped on a host that answers is named for a restart, with an alert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain import host_ha_operations
from domain.alert import Alert, AlertType, ArchiveAlertRequest, alert_id_for, archive
from domain.cloud import Cloud
from domain.errors import NotFound
from domain.host import Host
from domain.host_ha import HaState, HaStatus
from domain.power_state import HostReport, reconcile_cluster
from domain.virtual_machine import VirtualMachine, VmState
from tests.unit.builders import bring_to, new_vm
from tests.unit.test_host_ha import T0, at, cluster_with_a_host


def fencing(cloud: Cloud) -> Host:
    host = cluster_with_a_host(cloud)
    host.change_ha(
        True, HaStatus().to(HaState.FENCING, at(1), "fencing", next_fence_at=at(1)), "fence"
    )
    cloud.save(host)
    return host


def alert(cloud: Cloud, command_id: str) -> Alert | None:
    return cloud.find(Alert, alert_id_for(command_id))


def test_a_fence_not_confirmed_raises_one_ha_alert_per_attempt_naming_why(
    memory_cloud: Cloud,
) -> None:
    host = fencing(memory_cloud)
    for _ in range(2):  # a retried step
        host_ha_operations.record_fence(
            memory_cloud, host.id, False, "the BMC did not answer", at(2), "pass-2/fenced"
        )
    raised = alert(memory_cloud, "pass-2/fenced")
    assert raised is not None and raised.alert_type is AlertType.HA_ACTION
    assert raised.alert_type.code == 30
    assert "not confirmed" in raised.subject and "the BMC did not answer" in raised.description
    assert (raised.resource_type, raised.resource_id) == ("Host", host.id)
    assert len(list(memory_cloud.events.get(raised.id))) == 1

    host_ha_operations.record_fence(
        memory_cloud, host.id, True, "the BMC reports h1 off", at(60), "pass-9/fenced"
    )
    fenced = alert(memory_cloud, "pass-9/fenced")
    assert memory_cloud.load(Host, host.id).ha_state is HaState.FENCED
    assert fenced is not None and fenced.subject == "HA: host h1 fenced"


def test_an_observation_that_changes_nothing_raises_nothing(memory_cloud: Cloud) -> None:
    host = cluster_with_a_host(memory_cloud)  # Available: a fence outcome does not apply
    host_ha_operations.record_fence(memory_cloud, host.id, False, "x", at(2), "stray")
    assert alert(memory_cloud, "stray") is None


def test_declaring_a_host_fenced_raises_an_alert_naming_who(memory_cloud: Cloud) -> None:
    host = fencing(memory_cloud)
    host_ha_operations.declare_fenced(memory_cloud, host.id, "ops-admin", at(5), "declare")
    raised = alert(memory_cloud, "declare")
    assert raised is not None and "declared fenced by ops-admin" in raised.subject


def test_an_alert_is_archived_once_and_an_unknown_one_is_refused(memory_cloud: Cloud) -> None:
    host = fencing(memory_cloud)
    host_ha_operations.record_fence(memory_cloud, host.id, False, "x", at(2), "pass-2/fenced")
    alert_id = alert_id_for("pass-2/fenced")
    request = ArchiveAlertRequest(
        job_id=uuid.uuid4(), account_id=uuid.uuid4(), alert_id=alert_id, summary="archive"
    )
    for _ in range(2):
        assert archive(memory_cloud, request) == {"id": str(alert_id), "archived": True}
    assert len(list(memory_cloud.events.get(alert_id))) == 2  # raised, archived
    with pytest.raises(NotFound, match="no alert"):
        archive(memory_cloud, request.model_copy(update={"alert_id": uuid.uuid4()}))


def running_on(cloud: Cloud, host: Host, name: str, ha: bool) -> VirtualMachine:
    vm = new_vm(name=name, ha_enabled=ha, zone_id=host.zone_id)
    bring_to(vm, VmState.RUNNING, host_id=host.id)
    host = cloud.load(Host, host.id)
    host.reserve_capacity(vm.id, 1000, 512, 1.0, 1.0, f"reserve/{vm.id}")
    cloud.save(vm, host)
    return vm


def test_an_ha_vm_found_stopped_on_a_host_that_answers_is_named_for_a_restart_once(
    memory_cloud: Cloud,
) -> None:
    host = cluster_with_a_host(memory_cloud)
    ha_vm = running_on(memory_cloud, host, "ha", True)
    plain = running_on(memory_cloud, host, "plain", False)
    listed_at = datetime.now(UTC) + timedelta(seconds=10)
    report = [HostReport(host_id=host.id, vms={str(ha_vm.id): "PowerOff"})]

    def sync() -> list[uuid.UUID]:
        outcome = reconcile_cluster(
            memory_cloud, host.cluster_id, "sync/1", report, listed_at, listed_at
        )
        return [c.vm_id for c in outcome.crashed]

    assert sync() == [ha_vm.id]
    for vm in (ha_vm, plain):
        stopped = memory_cloud.load(VirtualMachine, vm.id)
        assert stopped.state is VmState.STOPPED and stopped.last_host_id == host.id
    crash = alert(memory_cloud, f"sync/1/{ha_vm.id}/crashed")
    assert crash is not None and crash.alert_type is AlertType.USERVM
    assert "stopped on host h1 without a stop job" in crash.subject
    assert alert(memory_cloud, f"sync/1/{plain.id}/crashed") is None
    # The same pass retried (its first attempt recorded all this, then lost its answer) still
    # names the VM, so its restart is not lost; nothing is recorded twice.
    assert sync() == [ha_vm.id]
    assert len(list(memory_cloud.events.get(crash.id))) == 1
    # A later pass finds the books agreeing: nothing to restart.
    later = reconcile_cluster(memory_cloud, host.cluster_id, "sync/2", report, listed_at, T0)
    assert later.crashed == [] and later.changes == []
