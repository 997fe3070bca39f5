"""The typed job inputs and results keep the JSON they replaced: every job input recorded in a
history (one model with every optional field, most of them null) parses into its operation's own
model; a repeated click still joins the queued job it repeats, and only that; and a job's result
keeps the keys the API showed, each fact an operation adds only when it holds."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from domain.job_results import (
    DeployedVm,
    DestroyedVm,
    ExpungedVm,
    QueuedJobEnd,
    SnapshotJobResult,
    SnapshotTaken,
    TemplateFromSnapshot,
)
from domain.vm_requests import (
    DestroyVmRequest,
    SnapshotVmRequest,
    StartVmRequest,
    StopVmRequest,
    VmOperation,
    VmOperationRequest,
    vm_operation_request,
)
from domain.volume_requests import (
    DeleteVolumeRequest,
    ResizeVolumeRequest,
    VolumeOperation,
    VolumeOperationRequest,
    volume_operation_request,
)

HISTORIES = Path(__file__).parents[1] / "integration" / "histories"
VM_JOB_TYPES = {operation.job_type for operation in VmOperation}
VOLUME_JOB_TYPES = {operation.job_type for operation in VolumeOperation}


def recorded_job_inputs() -> list[tuple[str, str, dict[str, Any]]]:
    """(history, workflow type, input) of every VM and volume job started in a recording."""
    found = []
    for path in sorted(HISTORIES.glob("*.json")):
        for event in json.loads(path.read_text())["events"]:
            started = event.get("workflowExecutionStartedEventAttributes")
            if started is None:
                continue
            workflow_type = started["workflowType"]["name"]
            if workflow_type in VM_JOB_TYPES | VOLUME_JOB_TYPES:
                payload = started["input"]["payloads"][0]["data"]
                found.append((path.stem, workflow_type, json.loads(base64.b64decode(payload))))
    return found


RECORDED = recorded_job_inputs()


def test_the_recordings_hold_inputs_of_the_model_with_every_optional_field() -> None:
    """What the next test proves holds for the old payloads, not only for new ones."""
    assert {workflow_type for _, workflow_type, _ in RECORDED} >= {
        "StartVirtualMachine",
        "CreateVmSnapshot",
        "ScaleVirtualMachine",
        "ResizeVolume",
        "CreateTemplateFromSnapshot",
    }
    every_vm_field = {"forced", "expunge", "host_id", "snapshot_id", "service_offering_id"}
    assert any(every_vm_field <= set(given) for _, _, given in RECORDED)
    every_volume_field = {"creation", "vm_id", "size_bytes", "pool_id", "snapshot_id"}
    assert any(every_volume_field <= set(given) for _, _, given in RECORDED)


@pytest.mark.parametrize(
    ("history", "workflow_type", "given"), RECORDED, ids=[f"{h}-{w}" for h, w, _ in RECORDED]
)
def test_a_recorded_job_input_parses_into_its_operations_own_model(
    history: str, workflow_type: str, given: dict[str, Any]
) -> None:
    union: Any = VmOperationRequest if workflow_type in VM_JOB_TYPES else VolumeOperationRequest
    request = TypeAdapter(union).validate_python(given)
    assert request.operation.job_type == workflow_type
    assert (request.job_id, request.summary) == (uuid.UUID(given["job_id"]), given["summary"])
    # Every field the operation has kept its recorded value.
    for name in type(request).model_fields:
        if name in given and name != "operation":
            assert json.loads(request.model_dump_json(include={name}))[name] == given[name]


def ids() -> dict[str, Any]:
    return {"job_id": uuid.uuid4(), "account_id": uuid.uuid4(), "summary": "asked"}


def test_a_repeated_vm_request_is_the_same_only_when_it_asks_for_the_same() -> None:
    vm_id = uuid.uuid4()
    forced = StopVmRequest(**ids(), vm_id=vm_id, forced=True)
    assert forced.same_request_as(StopVmRequest(**ids(), vm_id=vm_id, forced=True))
    assert not forced.same_request_as(StopVmRequest(**ids(), vm_id=vm_id))
    assert not forced.same_request_as(StartVmRequest(**ids(), vm_id=vm_id))
    destroy = DestroyVmRequest(**ids(), vm_id=vm_id, expunge=True)
    assert not destroy.same_request_as(DestroyVmRequest(**ids(), vm_id=vm_id))
    # Each snapshot create makes a snapshot of its own.
    snapshot = SnapshotVmRequest(**ids(), vm_id=vm_id, snapshot_id=uuid.uuid4())
    assert not snapshot.same_request_as(snapshot)


def test_a_repeated_volume_request_is_the_same_only_for_the_same_volume() -> None:
    volume_id = uuid.uuid4()
    grow = ResizeVolumeRequest(**ids(), volume_id=volume_id, size_bytes=2**30)
    assert grow.same_request_as(ResizeVolumeRequest(**ids(), volume_id=volume_id, size_bytes=2**30))
    assert not grow.same_request_as(
        ResizeVolumeRequest(**ids(), volume_id=volume_id, size_bytes=2**31)
    )
    # A VM's queue holds the jobs of all its volumes: the same ask of another volume differs.
    delete = DeleteVolumeRequest(**ids(), volume_id=volume_id)
    assert not delete.same_request_as(DeleteVolumeRequest(**ids(), volume_id=uuid.uuid4()))


def test_an_operation_chosen_at_run_time_takes_only_its_own_fields() -> None:
    vm_id = uuid.uuid4()
    built = vm_operation_request(VmOperation.DESTROY, **ids(), vm_id=vm_id, expunge=True)
    assert isinstance(built, DestroyVmRequest) and built.expunge
    with pytest.raises(ValueError, match="start takes no expunge"):
        vm_operation_request(VmOperation.START, **ids(), vm_id=vm_id, expunge=True)
    with pytest.raises(ValidationError):  # a resize without its size
        volume_operation_request(VolumeOperation.RESIZE, **ids(), volume_id=uuid.uuid4())


def vm_facts(**extra: Any) -> dict[str, Any]:
    return {
        "virtual_machine_id": uuid.uuid4(),
        "state": "Expunging",
        "host_id": None,
        "ip_address": "10.1.0.7",
        **extra,
    }


def test_a_vm_result_says_what_the_operation_adds_only_when_it_holds() -> None:
    assert set(ExpungedVm(**vm_facts()).recorded()) == {
        "virtual_machine_id",
        "state",
        "host_id",
        "ip_address",
        "removed",
    }
    snapshot_id = uuid.uuid4()
    with_snapshots = ExpungedVm(**vm_facts(removed_vm_snapshot_ids=[snapshot_id])).recorded()
    assert with_snapshots["removed_vm_snapshot_ids"] == [str(snapshot_id)]
    deployed = DeployedVm(**vm_facts(state="Running", root_volume_id=uuid.uuid4())).recorded()
    assert deployed["ip_address"] == "10.1.0.7" and deployed["host_id"] is None


def test_a_snapshot_result_says_removed_only_when_its_volumes_queue_may_end() -> None:
    facts: dict[str, Any] = {
        "snapshot_id": uuid.uuid4(),
        "volume_id": uuid.uuid4(),
        "state": "Destroyed",
        "size_bytes": 2**30,
    }
    assert "removed" not in SnapshotJobResult(**facts).recorded()
    assert SnapshotJobResult(**facts, removed=True).recorded()["removed"] is True
    taken = SnapshotTaken(**facts, pruned=[facts["snapshot_id"]]).recorded()
    assert taken["pruned"] == [str(facts["snapshot_id"])]
    template = TemplateFromSnapshot(
        template_id=uuid.uuid4(),
        snapshot_id=facts["snapshot_id"],
        name="t",
        url="file:///t.qcow2",
        size_bytes=2**30,
    )
    assert "removed" not in template.recorded()


def test_the_queue_reads_its_facts_from_every_kind_of_result() -> None:
    destroyed = DestroyedVm(**vm_facts(state="Destroyed", expunge_delay_seconds=30)).recorded()
    assert QueuedJobEnd.model_validate(destroyed) == QueuedJobEnd(expunge_delay_seconds=30)
    expunged = ExpungedVm(**vm_facts()).recorded()
    assert QueuedJobEnd.model_validate(expunged).removed
    deployed = DeployedVm(**vm_facts(state="Running", root_volume_id=uuid.uuid4())).recorded()
    assert QueuedJobEnd.model_validate(deployed) == QueuedJobEnd()
