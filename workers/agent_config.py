"""The agent's configuration: which clusters it serves and how it reaches their hypervisors.

A TOML file (path in `STRATUS_AGENT_CONFIG`), kept next to the hypervisors and readable only by
the agent, because it holds the credentials: the control plane never sees them, nor do events,
workflow inputs, read models or logs (ARCHITECTURE rule 10). Secrets are `SecretStr`: they print
as `**********`, and validation errors name the key that is wrong, never the value given.

    [temporal]
    address = "temporal.example.internal:7233"

    [[clusters]]
    id = "0b7d..."                        # the cluster's Stratus id
    hypervisor = "KVM"                    # task_queue defaults to "hypervisor-<id>"
    [clusters.libvirt]
    uri = "qemu+tls://{address}/system"

See the README for every section (libvirt, vcenter, xenserver, ipmi, oobm).
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Self, cast
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from activities.drivers.hypervisor import HostRef, HypervisorDriver, NicSpec
from domain.infrastructure import default_agent_task_queue

log = logging.getLogger("stratus.agent")

ENV_VAR = "STRATUS_AGENT_CONFIG"


class AgentConfigError(Exception):
    """The configuration cannot be used; the message names the file and the keys at fault."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LibvirtSettings(_Section):
    """KVM hosts through libvirt. Credentials (TLS certificates, SSH keys, SASL) live in
    libvirt's own client configuration on the agent's machine."""

    uri: str = Field(
        default="qemu+tls://{address}/system",
        description="connection URI template over the host's address, name and host_id",
    )
    domain_type: Literal["kvm", "qemu", "test"] = "kvm"
    network: str = Field(
        default="{network_id}",
        description="libvirt network of a NIC, a template over network_id and vlan",
    )
    migration_uri: str | None = "tcp://{address}"
    unsafe_migration: bool = False
    shutdown_timeout_seconds: float = Field(default=120.0, gt=0)
    call_timeout_seconds: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _no_password_in_uri(self) -> Self:
        userinfo = self.uri.partition("://")[2].partition("/")[0].rpartition("@")[0]
        if ":" in userinfo:
            raise ValueError("uri must not carry a password; use libvirt's client configuration")
        return self


class VCenterSettings(_Section):
    address: str = Field(min_length=1)
    user: str = Field(min_length=1)
    password: SecretStr
    datacenter: str = Field(min_length=1)
    cluster: str = Field(min_length=1, description="the cluster's name in vCenter")
    port: int = Field(default=443, ge=1, le=65535)
    protocol: Literal["https", "http"] = "https"
    verify_ssl: bool = True
    task_timeout_seconds: float = Field(default=600.0, gt=0)


class XenServerSettings(_Section):
    url: str = Field(min_length=1, description="the pool master, http(s)://host[:port]/")
    user: str = Field(min_length=1)
    password: SecretStr
    verify_tls: bool = True
    base_template: str = "Other install media"
    task_timeout_seconds: float = Field(default=600.0, gt=0)


class BareMetalMachineSettings(_Section):
    """One machine: its BMC (the host's address in Stratus) and its size (IPMI cannot tell)."""

    bmc_address: str = Field(min_length=1)
    cpu_count: int = Field(ge=1)
    cpu_speed_mhz: int = Field(ge=1)
    memory_mib: int = Field(ge=1)
    #: This machine's own BMC login, when it differs from the section's.
    user: str | None = None
    password: SecretStr | None = None


class IpmiSettings(_Section):
    user: str = Field(min_length=1)
    password: SecretStr
    cipher_suite: Literal[3, 17] = 3
    machines: list[BareMetalMachineSettings] = Field(min_length=1)
    provision_timeout_seconds: float = Field(default=1800.0, gt=0)


class BmcLoginSettings(_Section):
    """One BMC's own login, when it differs from the section's."""

    address: str = Field(min_length=1, description="the BMC's address as recorded in Stratus")
    user: str = Field(min_length=1)
    password: SecretStr


class OutOfBandSettings(_Section):
    """The BMC logins of the cluster's hosts, for out-of-band management (power actions and
    HA fencing): the control plane records only each BMC's address."""

    user: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    cipher_suite: Literal[3, 17] = 3
    bmcs: list[BmcLoginSettings] = Field(default_factory=list)
    settle_timeout_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _login_is_whole(self) -> Self:
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together")
        return self

    def power_control(self) -> Any:
        from activities.drivers.ipmi import BmcLogin, IpmiClient
        from activities.drivers.out_of_band import BmcLogins, IpmiPowerControl

        default = (
            BmcLogin(self.user, self.password.get_secret_value())
            if self.user is not None and self.password is not None
            else None
        )
        logins = BmcLogins(
            {b.address: BmcLogin(b.user, b.password.get_secret_value()) for b in self.bmcs},
            default,
        )
        return IpmiPowerControl(
            logins,
            IpmiClient(cipher_suite=self.cipher_suite),
            settle_timeout=self.settle_timeout_seconds,
        )


HYPERVISOR_SECTIONS: dict[str, str | None] = {
    "Simulator": None,
    "KVM": "libvirt",
    "VMware": "vcenter",
    "XenServer": "xenserver",
    "BareMetal": "ipmi",
}


class ClusterSettings(_Section):
    id: UUID
    hypervisor: Literal["Simulator", "KVM", "VMware", "XenServer", "BareMetal"]
    task_queue: str | None = Field(default=None, min_length=1)
    libvirt: LibvirtSettings | None = None
    vcenter: VCenterSettings | None = None
    xenserver: XenServerSettings | None = None
    ipmi: IpmiSettings | None = None
    oobm: OutOfBandSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _kvm_defaults(cls, data: Any) -> Any:
        # A KVM cluster may omit [clusters.libvirt] to take every default.
        if isinstance(data, dict) and data.get("hypervisor") == "KVM" and "libvirt" not in data:
            return {**data, "libvirt": {}}
        return data

    @model_validator(mode="after")
    def _one_backend(self) -> Self:
        wanted = HYPERVISOR_SECTIONS[self.hypervisor]
        for section in ("libvirt", "vcenter", "xenserver", "ipmi"):
            given = getattr(self, section) is not None
            if section == wanted and not given:
                raise ValueError(f"a {self.hypervisor} cluster needs a [{section}] section")
            if section != wanted and given:
                raise ValueError(f"[{section}] does not apply to a {self.hypervisor} cluster")
        return self

    @property
    def queue(self) -> str:
        return self.task_queue or default_agent_task_queue(self.id)

    def describe(self) -> str:
        """What the agent logs about the cluster: addresses, never credentials."""
        if self.libvirt is not None:
            where = f"libvirt {self.libvirt.uri}"
        elif self.vcenter is not None:
            where = (
                f"vCenter {self.vcenter.address} {self.vcenter.datacenter}/{self.vcenter.cluster}"
            )
        elif self.xenserver is not None:
            where = f"pool master {self.xenserver.url}"
        elif self.ipmi is not None:
            where = f"{len(self.ipmi.machines)} machines over IPMI"
        else:
            where = "in-process simulator"
        return f"{self.hypervisor} cluster {self.id} on task queue {self.queue} ({where})"


class TemporalSettings(_Section):
    address: str | None = None
    namespace: str = "default"


class AgentSettings(_Section):
    activity_threads: int = Field(default=16, ge=1, le=512)


class AgentConfig(_Section):
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    clusters: list[ClusterSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen_ids: set[UUID] = set()
        seen_queues: set[str] = set()
        for index, cluster in enumerate(self.clusters):
            if cluster.id in seen_ids:
                raise ValueError(f"clusters[{index}].id: cluster {cluster.id} is listed twice")
            if cluster.queue in seen_queues:
                raise ValueError(
                    f"clusters[{index}].task_queue: {cluster.queue} is used by two clusters"
                )
            seen_ids.add(cluster.id)
            seen_queues.add(cluster.queue)
        return self


# -- loading ----------------------------------------------------------------------------------
def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")) or part in {"str", "int"}:
            continue
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem: the key and what is wrong, never the value that was given."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{_key_path(problem['loc'])}: {message}")
    return lines


def parse_agent_config(data: Mapping[str, Any], source: str = "agent configuration") -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as error:
        problems = "\n  ".join(describe_errors(error))
        raise AgentConfigError(f"{source} is invalid:\n  {problems}") from None


def load_agent_config(path: Path | str | None = None) -> AgentConfig:
    """Read and validate the agent's TOML file (default: `$STRATUS_AGENT_CONFIG`)."""
    if path is None:
        path = os.environ.get(ENV_VAR)
        if not path:
            raise AgentConfigError(f"set {ENV_VAR} to the path of the agent's TOML file")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise AgentConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # The decoder's message gives line and column, not the text of the line.
        raise AgentConfigError(f"{path} is not valid TOML: {error}") from None
    config = parse_agent_config(data, str(path))
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO) and _holds_secrets(config):
        log.warning("%s holds credentials and is readable by others: chmod 600 it", path)
    return config


def _holds_secrets(config: AgentConfig) -> bool:
    return any(c.vcenter or c.xenserver or c.ipmi for c in config.clusters)


# -- drivers ----------------------------------------------------------------------------------
def build_driver(cluster: ClusterSettings, **overrides: Any) -> HypervisorDriver:
    """The driver serving one cluster, built from its section (imports only its backend)."""
    builders: dict[str, Callable[..., HypervisorDriver]] = {
        "Simulator": _simulator,
        "KVM": _libvirt,
        "VMware": _vsphere,
        "XenServer": _xenserver,
        "BareMetal": _baremetal,
    }
    return builders[cluster.hypervisor](cluster, **overrides)


def _simulator(cluster: ClusterSettings, **overrides: Any) -> HypervisorDriver:
    from activities.drivers.simulator import SimulatorDriver

    return SimulatorDriver(**overrides)


def _libvirt(cluster: ClusterSettings, **overrides: Any) -> HypervisorDriver:
    from activities.drivers.libvirt_kvm import LibvirtKvmDriver

    settings = cluster.libvirt
    assert settings is not None
    network = settings.network

    def network_source(nic: NicSpec) -> str:
        return network.format(network_id=nic.network_id, vlan=nic.vlan)

    return LibvirtKvmDriver(
        settings.uri,
        domain_type=settings.domain_type,
        network_source=network_source,
        migration_uri=settings.migration_uri,
        unsafe_migration=settings.unsafe_migration,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        call_timeout=settings.call_timeout_seconds,
        **overrides,
    )


def _vsphere(cluster: ClusterSettings, **overrides: Any) -> HypervisorDriver:
    from activities.drivers.vsphere import VCenterEndpoint, VSphereDriver

    settings = cluster.vcenter
    assert settings is not None
    endpoint = VCenterEndpoint(
        host=settings.address,
        user=settings.user,
        password=settings.password.get_secret_value(),
        port=settings.port,
        protocol=settings.protocol,
        verify_ssl=settings.verify_ssl,
        datacenter=settings.datacenter,
    )
    return VSphereDriver(
        {str(cluster.id): endpoint}, task_timeout=settings.task_timeout_seconds, **overrides
    )


def _xenserver(cluster: ClusterSettings, **overrides: Any) -> HypervisorDriver:
    from activities.drivers.xenserver import XenServerDriver, XenServerPool

    settings = cluster.xenserver
    assert settings is not None
    pool = XenServerPool(
        url=settings.url,
        username=settings.user,
        password=settings.password.get_secret_value(),
        verify_tls=settings.verify_tls,
    )
    return XenServerDriver(
        {str(cluster.id): pool},
        base_template=settings.base_template,
        task_timeout=settings.task_timeout_seconds,
        **overrides,
    )


def _baremetal(cluster: ClusterSettings, **overrides: Any) -> HypervisorDriver:
    from activities.drivers.baremetal import (
        BareMetalDriver,
        BareMetalMachine,
        ProvisioningCallbacks,
    )

    settings = cluster.ipmi
    assert settings is not None
    by_bmc = {
        m.bmc_address: BareMetalMachine(
            username=m.user or settings.user,
            password=(m.password or settings.password).get_secret_value(),
            cpu_count=m.cpu_count,
            cpu_speed_mhz=m.cpu_speed_mhz,
            memory_mib=m.memory_mib,
        )
        for m in settings.machines
    }
    machines = MachinesByHostId(by_bmc)
    driver = BareMetalDriver(
        machines,
        overrides.pop("callbacks", None) or ProvisioningCallbacks(),
        cipher_suite=settings.cipher_suite,
        provision_timeout=settings.provision_timeout_seconds,
        **overrides,
    )
    return cast(HypervisorDriver, LearnsHosts(driver, machines))


class MachinesByHostId(Mapping[str, Any]):
    """The bare-metal driver looks machines up by host id; the configuration knows them by BMC
    address (a host's address), because host ids are only made when the host is added. Each
    host is learnt from the first ref that names it."""

    def __init__(self, by_bmc: Mapping[str, Any]) -> None:
        self._by_bmc = dict(by_bmc)
        self._by_host: dict[str, Any] = {}

    def learn(self, host: HostRef) -> None:
        machine = self._by_bmc.get(host.address)
        if machine is not None:
            self._by_host[host.host_id] = machine

    def __getitem__(self, host_id: str) -> Any:
        return self._by_host[host_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_host)

    def __len__(self) -> int:
        return len(self._by_host)


class LearnsHosts:
    """A driver whose calls first teach `MachinesByHostId` the hosts they name."""

    def __init__(self, driver: Any, machines: MachinesByHostId) -> None:
        self._driver = driver
        self._machines = machines
        self.hypervisor = driver.hypervisor

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._driver, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            for value in (*args, *kwargs.values()):
                if isinstance(value, HostRef):
                    self._machines.learn(value)
            return attribute(*args, **kwargs)

        return call
