"""Out-of-band power control of hosts through their BMCs (IPMI 2.0, CloudStack's `ipmitool`
driver), for configureOutOfBandManagement's power actions and, later, HA's fencing.

The logins are the worker's (`BmcLogins`, from the agent's configuration): a host's recorded
BMC address says where to go, never who to be. After ON, OFF and SOFT the BMC is read until it
reports the state the action leads to (or `settle_timeout` passes), so what is recorded is what
the machine did, not what was asked: a fence must be *confirmed* off.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from activities.drivers.hypervisor import DriverError, ResourceUnavailableError
from activities.drivers.ipmi import BmcLogin, IpmiClient, bmc_address

#: What each action asks of the BMC (pyghmi's set_power states; CYCLE is chassis control 2).
_SET_POWER = {"ON": "on", "OFF": "off", "SOFT": "shutdown", "RESET": "reset"}
#: The power state each action leads to, when it leads to one.
_SETTLES_TO = {"ON": "on", "OFF": "off", "SOFT": "off"}
_CHASSIS_CONTROL = 0x02
_POWER_CYCLE = 0x02


@dataclass(frozen=True)
class BmcLogins:
    """BMC logins by address (`host` or `host:port`, as recorded), with a default."""

    by_address: Mapping[str, BmcLogin] = field(default_factory=dict)
    default: BmcLogin | None = None

    def login_for(self, address: str) -> BmcLogin:
        host, port = bmc_address(address)
        for key in (address, f"{host}:{port}", host):
            found = self.by_address.get(key)
            if found is not None:
                return found
        if self.default is not None:
            return self.default
        raise ResourceUnavailableError(
            f"no BMC login for {address} in this worker's configuration "
            "(the agent's [clusters.oobm] section)"
        )


class IpmiPowerControl:
    def __init__(
        self,
        logins: BmcLogins,
        client: IpmiClient | None = None,
        *,
        settle_timeout: float = 30.0,
        poll_interval: float = 0.5,
    ) -> None:
        self._logins = logins
        self._client = client or IpmiClient(cipher_suite=3)
        self._settle_timeout = settle_timeout
        self._poll_interval = poll_interval

    def _read(self, name: str, address: str, login: BmcLogin) -> str:
        answer: dict[str, Any] = self._client.exchange(
            name, address, login, f"power state of {name}", lambda c: c.get_power()
        )
        return "on" if answer.get("powerstate") == "on" else "off"

    def send(self, name: str, address: str, action: str) -> None:
        """Ask the BMC for `action` (ON, OFF, CYCLE, RESET or SOFT); STATUS asks nothing."""
        login = self._logins.login_for(address)
        what = f"power {action.lower()} {name}"
        if action in _SET_POWER:
            state = _SET_POWER[action]
            self._client.exchange(name, address, login, what, lambda c: c.set_power(state))
        elif action == "CYCLE":

            def cycle(command: Any) -> None:
                answer = command.raw_command(netfn=0, command=_CHASSIS_CONTROL, data=[_POWER_CYCLE])
                if "error" in answer:
                    raise DriverError(f"{what}: the BMC refused: {answer['error']}")

            self._client.exchange(name, address, login, what, cycle)
        elif action != "STATUS":
            raise DriverError(f"unknown power action {action}")

    def settle(self, name: str, address: str, action: str) -> tuple[str, bool]:
        """The power state ("on" or "off") the BMC reports once `action` has taken effect, and
        whether it did: after ON, OFF and SOFT the BMC is read until it reports the state the
        action leads to, or `settle_timeout` passes."""
        login = self._logins.login_for(address)
        wanted = _SETTLES_TO.get(action)
        deadline = time.monotonic() + self._settle_timeout
        state = self._read(name, address, login)
        while wanted is not None and state != wanted and time.monotonic() < deadline:
            time.sleep(self._poll_interval)
            state = self._read(name, address, login)
        return state, wanted is None or state == wanted

    def close(self) -> None:
        self._client.close()
