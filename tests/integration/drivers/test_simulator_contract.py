"""The driver contract against the in-process simulator, so it cannot drift from real backends."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from activities.drivers.hypervisor import (
    HostRef,
    ResourceUnavailableError,
    SecondaryStorageRef,
    StoragePoolRef,
    VolumeSpec,
)
from activities.drivers.simulator import SimulatorDriver
from tests.integration.drivers.contract import MIB, Backend, HypervisorContract


def host(name: str) -> HostRef:
    return HostRef(f"host-{name}", name, "127.0.0.1", "c1", "Simulator")


class TestSimulatorContract(HypervisorContract):
    @pytest.fixture
    def backend(self) -> Backend:
        gone = host("gone")
        faults = [
            {
                "operation": "*",
                "action": "fail",
                "host_id": gone.host_id,
                "error_code": 534,
                "message": "host gone is unreachable (simulated)",
            }
        ]
        driver = SimulatorDriver(lambda: faults)
        assert ResourceUnavailableError.code == 534
        return Backend(
            driver=driver,
            host=host("a"),
            target_host=host("b"),
            unreachable_host=gone,
            pool=StoragePoolRef("pool-1", "primary", "/primary"),
            target_pool=StoragePoolRef("pool-2", "primary-b", "/primary-b"),
        )


# -- what only the simulator has -----------------------------------------------------------

VOLUME_SNAPSHOT_OPERATIONS = (
    "snapshot_volume",
    "backup_volume_snapshot",
    "delete_volume_snapshot",
    "delete_snapshot_backup",
    "revert_volume_to_snapshot",
    "create_volume_from_snapshot",
    "create_template_from_snapshot",
)


@pytest.mark.parametrize("operation", VOLUME_SNAPSHOT_OPERATIONS)
def test_each_volume_snapshot_step_can_be_made_to_fail_by_its_operation_name(
    operation: str,
) -> None:
    faults: list[dict[str, object]] = []
    driver = SimulatorDriver(lambda: faults)
    a = host("a")
    pool = StoragePoolRef("pool-1", "primary", "/primary")
    secondary = SecondaryStorageRef("store-1", "secondary", "nfs://nfs/export", "/mnt/secondary")
    driver.create_volume(a, pool, VolumeSpec("vol-1", "data", 8 * MIB))
    steps: dict[str, Callable[[], object]] = {
        "snapshot_volume": lambda: driver.snapshot_volume(a, pool, "vol-1", "snap-1"),
        "backup_volume_snapshot": lambda: driver.backup_volume_snapshot(
            a, pool, "vol-1", "snap-1", secondary
        ),
        "delete_volume_snapshot": lambda: driver.delete_volume_snapshot(a, pool, "vol-1", "snap-1"),
        "revert_volume_to_snapshot": lambda: driver.revert_volume_to_snapshot(
            a, pool, "vol-1", secondary, "snap-1"
        ),
        "create_volume_from_snapshot": lambda: driver.create_volume_from_snapshot(
            a, pool, VolumeSpec("vol-2", "copy", 8 * MIB), secondary, "snap-1"
        ),
        "create_template_from_snapshot": lambda: driver.create_template_from_snapshot(
            a, secondary, "snap-1", "tpl-1"
        ),
        "delete_snapshot_backup": lambda: driver.delete_snapshot_backup(a, secondary, "snap-1"),
    }
    for name in VOLUME_SNAPSHOT_OPERATIONS[: VOLUME_SNAPSHOT_OPERATIONS.index(operation)]:
        if name not in ("delete_volume_snapshot", "delete_snapshot_backup"):
            steps[name]()
    faults.append({"operation": operation, "action": "fail", "host_id": a.host_id})
    with pytest.raises(ResourceUnavailableError, match=operation):
        steps[operation]()
    faults.clear()
    steps[operation]()  # the step itself works once the fault is lifted
