"""Fake machines behind pyghmi BMCs, in a process of their own, for the bare-metal driver tests.

Run as `python -m tests.integration.drivers.bmc_server <count> <user> <password>`: it serves
`count` IPMI 2.0 BMCs (pyghmi's `Bmc`, cipher suite 3) on 127.0.0.1, each on an ephemeral UDP
port, prints `READY <port> ...`, then one line per thing a machine does, which is how a test sees
what really happened at the machine rather than what the driver says:

    EVENT <port> boot_device network     (set by a client)
    EVENT <port> power_on network        (powered on; it boots from the device named)
    EVENT <port> reset network           (reset while on: it boots again)
    EVENT <port> soft_off                (ACPI power button: the OS shut down)
    EVENT <port> soft_off_ignored        (ACPI power button while the OS ignores it)
    EVENT <port> power_off

Commands on stdin: `ignore_soft_off <port> 0|1`, `power <port> on|off` (someone at the machine).

A separate process because pyghmi keeps its sessions and its event loop in class attributes:
a BMC and a client in one process would share them, which no real deployment does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import Any

from pyghmi.ipmi import bmc as ipmi_bmc
from pyghmi.ipmi.private import session as ipmi_session

_print_lock = threading.Lock()


def emit(*words: object) -> None:
    with _print_lock:
        print(*words, flush=True)


class FakeMachine(ipmi_bmc.Bmc):
    """A machine's power and next-boot device, as its BMC sees them.

    IPMI boot flags are valid for the next boot only (unless made persistent): after a boot
    the device goes back to `default`, as real BMCs do.
    """

    def __init__(self, authdata: dict[str, str]) -> None:
        super().__init__(authdata, port=0, address="127.0.0.1")
        # pyghmi routes session packets by the BMC's port; with port 0 it must learn the real one.
        self.port = self.serversocket.getsockname()[1]
        self.powered = False
        self.bootdev = "default"
        self.ignore_soft_off = False
        self.lock = threading.Lock()

    def _boot(self, how: str) -> None:
        emit("EVENT", self.port, how, self.bootdev)
        self.bootdev = "default"

    def get_power_state(self) -> str:
        with self.lock:
            return "on" if self.powered else "off"

    def power_on(self) -> int:
        with self.lock:
            if not self.powered:
                self.powered = True
                self._boot("power_on")
        return 0

    def power_off(self) -> int:
        with self.lock:
            if self.powered:
                self.powered = False
                emit("EVENT", self.port, "power_off")
        return 0

    def power_shutdown(self) -> int:
        with self.lock:
            if not self.powered:
                return 0
            if self.ignore_soft_off:
                emit("EVENT", self.port, "soft_off_ignored")
                return 0
            self.powered = False
            emit("EVENT", self.port, "soft_off")
        return 0

    def power_reset(self) -> int:
        with self.lock:
            if not self.powered:
                return 0xD5  # "cannot execute command in the present state"
            self._boot("reset")
        return 0

    def power_cycle(self) -> int:
        with self.lock:
            if not self.powered:
                return 0xD5
            self._boot("cycle")
        return 0

    def get_boot_device(self) -> str:
        with self.lock:
            return self.bootdev

    def set_boot_device(self, bootdevice: Any) -> None:
        with self.lock:
            self.bootdev = str(bootdevice)
            emit("EVENT", self.port, "boot_device", self.bootdev)


def commands(machines: dict[int, FakeMachine]) -> None:
    for line in sys.stdin:
        words = line.split()
        if len(words) != 3:
            continue
        verb, port, value = words[0], int(words[1]), words[2]
        machine = machines[port]
        if verb == "ignore_soft_off":
            with machine.lock:
                machine.ignore_soft_off = value == "1"
        elif verb == "power":
            (machine.power_on if value == "on" else machine.power_off)()
        emit("ACK", port, verb)
    os._exit(0)  # stdin closed: the test is done with us (pyghmi's loop never returns)


def main() -> None:
    count, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    machines = {m.port: m for m in (FakeMachine({user: password}) for _ in range(count))}
    emit("READY", *machines)
    threading.Thread(target=commands, args=(machines,), daemon=True).start()
    while True:
        try:
            ipmi_session.Session.wait_for_rsp(timeout=1)
        except Exception:
            # pyghmi's one event loop serves every machine: an exchange it cannot handle (a
            # client's retransmission on a busy machine, a session it already dropped) raises
            # here. A real BMC drops that packet and goes on serving; so do these, and say so.
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            time.sleep(0.05)


if __name__ == "__main__":
    main()
