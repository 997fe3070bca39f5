"""The driver contract against govmomi's vCenter simulator (vcsim), spoken to by pyVmomi."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from activities.drivers.hypervisor import HostRef, NicSpec, StoragePoolRef, TemplateRef
from activities.drivers.vsphere import VCenterEndpoint, VSphereDriver
from tests.integration.drivers.contract import MIB, Backend, HypervisorContract


def host(name: str, cluster: str = "DC0_C0") -> HostRef:
    return HostRef(f"host-{name}", name, "", cluster, "VMware")


class TestVSphereContract(HypervisorContract):
    unsupported = {
        "resize": "govmomi's simulator does not implement ExtendVirtualDisk_Task",
    }

    @pytest.fixture(scope="class")
    @classmethod
    def vsphere_backend(cls, vcsim_url: str) -> Iterator[Backend]:
        url = urlparse(vcsim_url)
        endpoint = VCenterEndpoint(
            host="127.0.0.1",
            port=url.port or 80,
            user=url.username or "user",
            password=url.password or "pass",
            protocol="http",
        )
        dead = VCenterEndpoint(host="127.0.0.1", port=1, user="u", password="p", protocol="http")
        driver = VSphereDriver(
            {"DC0_C0": endpoint, "gone": dead}, shutdown_timeout=1.0, task_timeout=60.0
        )
        yield Backend(
            driver=driver,
            host=host("DC0_C0_H0"),
            target_host=host("DC0_C0_H1"),
            unreachable_host=host("esx-gone", cluster="gone"),
            pool=StoragePoolRef("pool-1", "LocalDS_0", "/"),
            template=TemplateRef("tpl-1", "DC0_C0_RP0_VM0", "", "OVA", 16 * MIB),
            nics=(NicSpec("00:50:56:00:00:01", "10.1.1.10", "guest-net", vlan=120),),
        )
        driver.close()

    @pytest.fixture
    def backend(self, vsphere_backend: Backend) -> Backend:
        return vsphere_backend
