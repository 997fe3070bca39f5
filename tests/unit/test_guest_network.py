"""IP addresses on a guest network: handed out in order around the gateway, one per NIC owner
however often asked, given back idempotently, and a clear refusal when none is left."""

from __future__ import annotations

import uuid

import pytest

from domain.errors import InvalidParameter, ResourceAllocationError
from tests.unit.builders import new_guest_network


def test_addresses_are_handed_out_in_order_from_the_start_of_the_range() -> None:
    network = new_guest_network(start_ip="10.1.0.10", end_ip="10.1.0.20")
    first, second = uuid.uuid4(), uuid.uuid4()
    assert network.allocate_ip(first, "a/allocate-ip") == "10.1.0.10"
    assert network.allocate_ip(second, "b/allocate-ip") == "10.1.0.11"
    assert network.address_of(first) == "10.1.0.10"


def test_the_gateway_is_never_handed_out() -> None:
    network = new_guest_network(gateway="10.1.0.1", start_ip="10.1.0.1", end_ip="10.1.0.3")
    taken = {network.allocate_ip(uuid.uuid4(), f"{n}/allocate-ip") for n in range(2)}
    assert taken == {"10.1.0.2", "10.1.0.3"}
    with pytest.raises(ResourceAllocationError):
        network.allocate_ip(uuid.uuid4(), "c/allocate-ip")


def test_an_owner_asking_again_gets_the_same_address_and_no_new_event() -> None:
    network, vm = new_guest_network(), uuid.uuid4()
    address = network.allocate_ip(vm, "job/allocate-ip")
    version = network.version
    assert network.allocate_ip(vm, "job/allocate-ip") == address  # the activity ran again
    assert network.allocate_ip(vm, "other-job/allocate-ip") == address
    assert network.version == version and network.free_addresses() == 10


def test_a_released_address_goes_to_the_next_owner() -> None:
    network = new_guest_network(start_ip="10.1.0.10", end_ip="10.1.0.11")
    vm = uuid.uuid4()
    network.allocate_ip(vm, "a/allocate-ip")
    network.allocate_ip(uuid.uuid4(), "b/allocate-ip")
    network.release_ip(vm, "a/release-ip")
    assert network.address_of(vm) is None and network.free_addresses() == 1
    assert network.allocate_ip(uuid.uuid4(), "c/allocate-ip") == "10.1.0.10"


def test_releasing_twice_or_what_was_never_held_changes_nothing() -> None:
    network, vm = new_guest_network(), uuid.uuid4()
    network.allocate_ip(vm, "a/allocate-ip")
    network.release_ip(vm, "a/release-ip")
    version = network.version
    network.release_ip(vm, "a/release-ip")
    network.release_ip(uuid.uuid4(), "b/release-ip")
    assert network.version == version


def test_a_full_network_refuses_with_cloudstacks_allocation_error() -> None:
    network = new_guest_network(start_ip="10.1.0.10", end_ip="10.1.0.10")
    network.allocate_ip(uuid.uuid4(), "a/allocate-ip")
    version = network.version
    with pytest.raises(ResourceAllocationError) as refused:
        network.allocate_ip(uuid.uuid4(), "b/allocate-ip")
    assert refused.value.code == 535 and network.name in refused.value.message
    assert network.version == version and network.free_addresses() == 0


@pytest.mark.parametrize(
    ("cidr", "gateway", "start_ip", "end_ip", "complaint"),
    [
        ("10.1.0.0/24", "10.1.0.1", "10.1.0.20", "10.1.0.10", "start_ip must not be after"),
        ("10.1.0.0/24", "10.2.0.1", "10.1.0.10", "10.1.0.20", "gateway 10.2.0.1 is outside"),
        ("10.1.0.0/24", "10.1.0.1", "10.1.0.10", "10.1.1.20", "end_ip 10.1.1.20 is outside"),
        ("10.1.0.0/24", "10.1.0.1", "10.1.0.300", "10.1.0.20", "invalid guest network"),
        ("10.1.0.0/33", "10.1.0.1", "10.1.0.10", "10.1.0.20", "invalid guest network"),
    ],
)
def test_a_network_with_impossible_addressing_is_refused(
    cidr: str, gateway: str, start_ip: str, end_ip: str, complaint: str
) -> None:
    with pytest.raises(InvalidParameter) as refused:
        new_guest_network(cidr=cidr, gateway=gateway, start_ip=start_ip, end_ip=end_ip)
    assert complaint in refused.value.message


def test_the_netmask_follows_the_cidr() -> None:
    assert new_guest_network(cidr="10.1.0.0/22", end_ip="10.1.3.20").netmask == "255.255.252.0"
