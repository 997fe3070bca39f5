"""Addresses, URIs and paths never carry credentials, however they are spelled."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from domain.cluster_connection import ConnectionSettings, check_connection
from domain.errors import InvalidParameter
from domain.locations import (
    LocationUri,
    NetworkAddress,
    StoragePath,
    check_location,
    credentials_in,
)

HOSTILE = [
    "root:pw@10.0.0.77",
    "root@10.0.0.77",
    "admin:pw@bmc-1:623",
    "nfs://admin:pw@filer/export",
    "nfs://admin@filer/export",
    "qemu+tcp://root:pw@h/system",
    "qemu+ssh://root@h/system",
    "qemu+tcp://user%3Apass@h/system",
    "qemu+tcp://user%3Apass%40h/system",
    "qemu+tcp://user%253Apass%2540h/system",
    "qemu+tcp://h/system?password=pw",
    "qemu+tcp://h/system?no_verify=1&PASSWORD=pw",
    "qemu+tcp://h/system?pass%77ord=pw",
    "qemu+tcp://h/system?passwd=pw",
    "qemu+tcp://h/system?pwd=pw",
    "qemu+tcp://h/system?secret=s",
    "qemu+tcp://h/system?token=t",
    "qemu+tcp://h/system?auth=a",
    "qemu+tcp://h/system?keyfile=/root/.ssh/id_rsa",
    "qemu+tcp://h/system?api_key=k",
    "qemu+tcp://h/system?user=root",
    "https://vc.example/sdk;jsessionid=abc",
    "https://vc.example/sdk#access_token=abc",
    "cifs://filer/share?username=u&password=p",
    "https://user:pw@vcenter.example.com",
    "vc\uff20example",  # a fullwidth @, folded to @ by Unicode normalization
    "root@host:/export",
    "//admin:pw@filer/export",
    "nfs://filer\\@evil/export",
]
CLEAN = [
    "10.0.0.77",
    "10.0.0.77:16509",
    "[fe80::1]:623",
    "kvm-1.example.com",
    "qemu+tls://{address}/system",
    "qemu:///system",
    "test:///default",
    "qemu+tcp://h/system?no_verify=1&socket=/run/libvirt.sock",
    "nfs://filer/export/primary",
    "/var/lib/stratus/primary",
    "/mnt/zfs/pool@snapshot-is-a-path-not-a-user",
    "datastore1",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_location_carrying_a_credential_is_refused(value: str) -> None:
    assert credentials_in(value) is not None
    with pytest.raises(InvalidParameter) as refused:
        check_location(value, "path")
    assert refused.value.field == "path"
    assert "agent's configuration" in refused.value.message


@pytest.mark.parametrize("value", CLEAN)
def test_a_location_without_credentials_is_kept(value: str) -> None:
    assert credentials_in(value) is None
    check_location(value, "path")


def test_the_refusal_never_repeats_the_secret() -> None:
    with pytest.raises(InvalidParameter) as refused:
        check_location("nfs://admin:hunter2@filer/x", "path")
    assert "hunter2" not in refused.value.message


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("10.0.0.1", True),
        ("bmc-7:623", True),
        ("[2001:db8::1]:443", True),
        ("host.example.", True),
        ("host:0", False),
        ("host:65536", False),
        ("host name", False),
        ("2001:db8::1", False),  # an IPv6 address goes in brackets, as in a URI
        ("host/path", False),
        ("root:pw@host", False),
        ("host\n", False),
    ],
)
def test_a_network_address_is_host_and_port(value: str, valid: bool) -> None:
    adapter = TypeAdapter(NetworkAddress)
    if valid:
        assert adapter.validate_python(value) == value
    else:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


def test_a_uri_needs_a_scheme_and_a_path_takes_no_control_character() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(LocationUri).validate_python("no-scheme-here")
    with pytest.raises(ValidationError):
        TypeAdapter(StoragePath).validate_python("/var/lib/\x00")


@pytest.mark.parametrize(
    ("hypervisor", "settings", "field"),
    [
        ("KVM", {"libvirt_uri": "qemu+tcp://h/system?password=x"}, "connection.libvirt_uri"),
        (
            "VMware",
            {"vcenter_address": "u:p@vc", "datacenter": "d", "vcenter_cluster": "c"},
            "connection.vcenter_address",
        ),
        ("XenServer", {"pool_master_address": "root@xen"}, "connection.pool_master_address"),
        (
            "BareMetal",
            {"bmc_addresses": ["10.0.0.1", "a:b@10.0.0.2"]},
            "connection.bmc_addresses.1",
        ),
    ],
)
def test_the_domain_refuses_credentials_in_connection_settings_however_they_were_built(
    hypervisor: str, settings: dict[str, Any], field: str
) -> None:
    built = ConnectionSettings.model_construct(**settings)  # past the API's types
    with pytest.raises(InvalidParameter) as refused:
        check_connection(hypervisor, built)
    assert refused.value.field == field
