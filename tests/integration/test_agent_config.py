"""The agent's TOML configuration: errors name the key at fault, secrets never show."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.drivers.libvirt_kvm import LibvirtKvmDriver
from activities.drivers.vsphere import VSphereDriver
from activities.drivers.xenserver import XenServerDriver
from workers.agent import build_agent_workers, hypervisor_activities
from workers.agent_config import (
    ENV_VAR,
    AgentConfigError,
    build_driver,
    load_agent_config,
)

SECRET = "s3cr3t-" + uuid.uuid4().hex
CLUSTER = str(uuid.uuid4())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(AgentConfigError) as raised:
        load_agent_config(write(tmp_path, text))
    message = str(raised.value)
    assert SECRET not in message
    return message


VCENTER = f"""
[[clusters]]
id = "{CLUSTER}"
hypervisor = "VMware"
[clusters.vcenter]
address = "vc.example.com"
user = "administrator@vsphere.local"
password = "{SECRET}"
datacenter = "DC1"
cluster = "Cluster-1"
"""


def test_a_full_configuration_builds_one_driver_per_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xen, kvm = uuid.uuid4(), uuid.uuid4()
    text = (
        VCENTER
        + f"""
[[clusters]]
id = "{xen}"
hypervisor = "XenServer"
task_queue = "xen-pool-1"
[clusters.xenserver]
url = "https://xen-master.example.com"
user = "root"
password = "{SECRET}"

[[clusters]]
id = "{kvm}"
hypervisor = "KVM"
"""
    )
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path, text)))
    config = load_agent_config()
    assert [c.queue for c in config.clusters] == [
        f"hypervisor-{CLUSTER}",
        "xen-pool-1",
        f"hypervisor-{kvm}",
    ]
    assert config.clusters[2].libvirt is not None
    assert config.clusters[2].libvirt.uri == "qemu+tls://{address}/system"
    drivers = [build_driver(c) for c in config.clusters]
    assert [type(d) for d in drivers] == [VSphereDriver, XenServerDriver, LibvirtKvmDriver]
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())
    assert all(SECRET not in c.describe() for c in config.clusters)


def test_errors_name_the_key_and_never_echo_a_secret(tmp_path: Path) -> None:
    missing = error_of(tmp_path, VCENTER.replace(f'password = "{SECRET}"', ""))
    assert "clusters[0].vcenter.password: Field required" in missing
    typo = error_of(tmp_path, VCENTER.replace("password =", "pasword ="))
    assert "clusters[0].vcenter.pasword: Extra inputs are not permitted" in typo
    wrong_section = error_of(tmp_path, VCENTER.replace('"VMware"', '"KVM"'))
    assert "clusters[0]: [vcenter] does not apply to a KVM cluster" in wrong_section
    no_section = error_of(tmp_path, f'[[clusters]]\nid = "{CLUSTER}"\nhypervisor = "XenServer"\n')
    assert "clusters[0]: a XenServer cluster needs a [xenserver] section" in no_section
    twice = error_of(tmp_path, VCENTER + VCENTER)
    assert f"clusters[1].id: cluster {CLUSTER} is listed twice" in twice
    bad_id = error_of(tmp_path, VCENTER.replace(CLUSTER, "not-a-uuid"))
    assert "clusters[0].id:" in bad_id
    bad_uri = error_of(
        tmp_path,
        f'[[clusters]]\nid = "{CLUSTER}"\nhypervisor = "KVM"\n[clusters.libvirt]\n'
        f'uri = "qemu+tcp://root:{SECRET}@kvm1/system"\n',
    )
    assert "clusters[0].libvirt: uri must not carry a password" in bad_uri
    assert "clusters: Field required" in error_of(tmp_path, "[agent]\nactivity_threads = 4\n")
    assert "not valid TOML" in error_of(tmp_path, f'password = "{SECRET}\n')


def test_a_missing_file_or_variable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(AgentConfigError, match=ENV_VAR):
        load_agent_config()
    with pytest.raises(AgentConfigError, match="cannot read"):
        load_agent_config(tmp_path / "nowhere.toml")


async def test_the_agent_serves_hypervisor_activities_only_and_logs_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, temporal_client: Client
) -> None:
    path = write(tmp_path, VCENTER)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.INFO, logger="stratus.agent"):
        config = load_agent_config(path)
        build_agent_workers(temporal_client, config)
    assert "readable by others" in caplog.text
    assert f"hypervisor-{CLUSTER}" in caplog.text
    assert SECRET not in caplog.text
    names = {fn.__temporal_activity_definition.name for fn in hypervisor_activities(None)}  # type: ignore[arg-type]
    assert {"hypervisor.launch_vm", "hypervisor.host_capacity"} <= names
    assert all(name.startswith("hypervisor.") for name in names)


def test_a_cluster_s_bmc_logins_serve_its_power_actions_and_never_show(tmp_path: Path) -> None:
    config = load_agent_config(
        write(
            tmp_path,
            f'[[clusters]]\nid = "{CLUSTER}"\nhypervisor = "Simulator"\n'
            f'[clusters.oobm]\nuser = "ADMIN"\npassword = "{SECRET}"\n'
            f'[[clusters.oobm.bmcs]]\naddress = "10.0.1.31:623"\nuser = "root"\n'
            f'password = "{SECRET}-own"\n',
        )
    )
    oobm = config.clusters[0].oobm
    assert oobm is not None and SECRET not in repr(config)
    logins = oobm.power_control()._logins
    assert logins.login_for("10.0.1.31:623").username == "root"
    assert logins.login_for("10.0.1.31").username == "root"  # the default port
    assert logins.login_for("10.0.1.99").username == "ADMIN"
    assert SECRET not in repr(logins)
    half = error_of(
        tmp_path,
        f'[[clusters]]\nid = "{CLUSTER}"\nhypervisor = "Simulator"\n[clusters.oobm]\nuser = "a"\n',
    )
    assert "clusters[0].oobm: user and password go together" in half
