"""The driver contract against the in-process simulator, so it cannot drift from real backends."""

from __future__ import annotations

import pytest

from activities.drivers.hypervisor import HostRef, ResourceUnavailableError, StoragePoolRef
from activities.drivers.simulator import SimulatorDriver
from tests.integration.drivers.contract import Backend, HypervisorContract


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
        )
