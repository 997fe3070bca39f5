"""Every number a request carries has the range a real device could have: beyond it, a 422
naming the field, before anything is recorded."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from api.models import (
    ClusterCreate,
    SimulatorFaultCreate,
    SnapshotPolicyCreate,
    StoragePoolCreate,
    VirtualMachineCreate,
    VolumeCreate,
    VolumeResize,
)
from domain.quantities import MAX_DISK_GIB, MAX_STORAGE_BYTES

ID = str(uuid.uuid4())
VALID: dict[type[BaseModel], dict[str, Any]] = {
    ClusterCreate: {"pod_id": ID, "name": "c", "hypervisor": "KVM"},
    StoragePoolCreate: {
        "name": "p",
        "scope": "ZONE",
        "zone_id": ID,
        "path": "/p",
        "capacity_bytes": 1,
    },
    SimulatorFaultCreate: {"operation": "start_vm", "action": "delay"},
    VolumeCreate: {"zone_id": ID, "disk_offering_id": ID, "name": "v"},
    VolumeResize: {"size_gib": 1},
    VirtualMachineCreate: {"zone_id": ID, "service_offering_id": ID, "template_id": ID},
    SnapshotPolicyCreate: {
        "volume_id": ID,
        "interval_type": "daily",
        "schedule": "30:02",
        "max_snaps": 1,
    },
}
#: (model, field, the largest value it takes, values beyond its range)
RANGES = [
    (
        StoragePoolCreate,
        "capacity_bytes",
        MAX_STORAGE_BYTES,
        [MAX_STORAGE_BYTES + 1, 2**63, 10**30, 0, -1],
    ),
    (StoragePoolCreate, "overprovisioning", 100.0, [100.5, 0.5, math.inf, math.nan]),
    (ClusterCreate, "cpu_overprovisioning", 100.0, [1e308, 0.0, math.inf, math.nan]),
    (ClusterCreate, "memory_overprovisioning", 1.0, [-1.0, math.nan]),
    (ClusterCreate, "disable_threshold", 1.0, [0.0, 1.01, math.nan]),
    (ClusterCreate, "power_sync_interval_seconds", 86400.0, [0.0, 86401.0, math.inf]),
    (ClusterCreate, "transitional_grace_seconds", 0.0, [-1.0, 1e30, math.nan]),
    (SimulatorFaultCreate, "delay_seconds", 3600.0, [3601.0, -0.1, math.inf, math.nan]),
    (SimulatorFaultCreate, "error_code", 530, [531, 500, 0, 2**63]),
    (VolumeCreate, "size_gib", MAX_DISK_GIB, [MAX_DISK_GIB + 1, 0, -1, 2**63]),
    (VolumeResize, "size_gib", MAX_DISK_GIB, [MAX_DISK_GIB + 1, 0, 10**30]),
    (VirtualMachineCreate, "root_disk_size_gib", MAX_DISK_GIB, [0, MAX_DISK_GIB + 1, 2**63]),
    (SnapshotPolicyCreate, "max_snaps", 8, [0, 9, 2**63, -(2**63)]),
]


@pytest.mark.parametrize(("model", "field", "largest", "beyond"), RANGES)
def test_a_number_beyond_what_a_real_device_has_is_refused_naming_the_field(
    model: type[BaseModel], field: str, largest: float, beyond: list[float]
) -> None:
    model.model_validate({**VALID[model], field: largest})
    for value in beyond:
        with pytest.raises(ValidationError) as refused:
            model.model_validate({**VALID[model], field: value})
        assert refused.value.errors()[0]["loc"][0] == field, value


def test_every_number_of_every_request_model_has_a_documented_range() -> None:
    for model in VALID:
        for name, schema in model.model_json_schema()["properties"].items():
            branches = schema.get("anyOf", [schema])
            for branch in branches:
                if branch.get("type") in ("integer", "number") and "enum" not in branch:
                    assert "maximum" in branch or "exclusiveMaximum" in branch, (model, name)
                    assert "minimum" in branch or "exclusiveMinimum" in branch, (model, name)
