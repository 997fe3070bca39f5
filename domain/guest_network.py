"""A shared guest network and the IP addresses it hands to NICs.

An address is allocated to a NIC owner (a VM) and the owner is the key: allocating again for the
same VM returns the same address, so a repeated activity never takes a second IP, and releasing
an address that is not held is a no-op, so an undo that runs twice is harmless.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import InvalidParameter, ResourceAllocationError


class GuestNetworkType(StrEnum):
    SHARED = "Shared"
    ISOLATED = "Isolated"


class GuestNetwork(CloudAggregate):
    @event("Created")
    def __init__(
        self,
        name: str,
        zone_id: UUID,
        network_type: str,
        cidr: str,
        gateway: str,
        start_ip: str,
        end_ip: str,
        vlan: int | None = None,
        dns1: str = "",
        account_id: UUID | None = None,
    ) -> None:
        check_ip_range(cidr, gateway, start_ip, end_ip)
        self.name = name
        self.zone_id = zone_id
        self.network_type = GuestNetworkType(network_type)
        self.cidr = cidr
        self.gateway = gateway
        self.start_ip = start_ip
        self.end_ip = end_ip
        self.vlan = vlan
        self.dns1 = dns1
        self.account_id = account_id
        self.allocations: dict[str, str] = {}  # ip -> owner id

    @property
    def netmask(self) -> str:
        return str(ipaddress.ip_network(self.cidr).netmask)

    def address_of(self, owner_id: UUID) -> str | None:
        owner = str(owner_id)
        return next((ip for ip, held_by in self.allocations.items() if held_by == owner), None)

    def free_addresses(self) -> int:
        first = int(ipaddress.ip_address(self.start_ip))
        last = int(ipaddress.ip_address(self.end_ip))
        return last - first + 1 - len(self.allocations)

    def allocate_ip(self, owner_id: UUID, command_id: str) -> str:
        held = self.address_of(owner_id)
        if held is not None:
            return held
        gateway = ipaddress.ip_address(self.gateway)
        first = int(ipaddress.ip_address(self.start_ip))
        last = int(ipaddress.ip_address(self.end_ip))
        for candidate in range(first, last + 1):
            ip = ipaddress.ip_address(candidate)
            if ip != gateway and str(ip) not in self.allocations:
                self._ip_allocated(str(ip), owner_id, command_id)
                return str(ip)
        raise ResourceAllocationError(f"guest network {self.name} has no free IP address left")

    @event("IpAllocated")
    def _ip_allocated(self, ip_address: str, owner_id: UUID, command_id: str) -> None:
        self.allocations[ip_address] = str(owner_id)
        self._remember(command_id)

    def release_ip(self, owner_id: UUID, command_id: str) -> None:
        held = self.address_of(owner_id)
        if held is not None:
            self._ip_released(held, owner_id, command_id)

    @event("IpReleased")
    def _ip_released(self, ip_address: str, owner_id: UUID, command_id: str) -> None:
        self.allocations.pop(ip_address, None)
        self._remember(command_id)


def check_ip_range(cidr: str, gateway: str, start_ip: str, end_ip: str) -> None:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
        addresses = {
            name: ipaddress.ip_address(value)
            for name, value in (("gateway", gateway), ("start_ip", start_ip), ("end_ip", end_ip))
        }
    except ValueError as error:
        raise InvalidParameter(f"invalid guest network addressing: {error}") from None
    for name, address in addresses.items():
        if address not in network:
            raise InvalidParameter(f"{name} {address} is outside {cidr}")
    if int(addresses["start_ip"]) > int(addresses["end_ip"]):
        raise InvalidParameter("start_ip must not be after end_ip")
