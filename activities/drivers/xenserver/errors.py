"""What XAPI's error codes mean to a job: which never work here, which another host may do,
and which are a race that a retry, looking everything up again by Stratus id, gets past."""

from __future__ import annotations

from collections.abc import Sequence

from activities.drivers.hypervisor import (
    DriverError,
    InsufficientHostCapacityError,
    ResourceUnavailableError,
    UnsupportedOperationError,
)

#: XAPI cannot do this here at all (CloudStack 432).
_UNSUPPORTED = {
    "MESSAGE_METHOD_UNKNOWN",
    "SR_OPERATION_NOT_SUPPORTED",
    "SR_UNKNOWN_DRIVER",
    "VDI_NOT_IN_MAP",
    "FEATURE_RESTRICTED",
    "LICENCE_RESTRICTION",
    "VM_LACKS_FEATURE",
    "VM_LACKS_FEATURE_SUSPEND",
    "VM_LACKS_FEATURE_VCPU_HOTPLUG",
}
#: The host has no room, whatever our books say (533).
#: SR_BACKEND_FAILURE_44 is the storage manager's "There is insufficient space": how an SR the
#: SM backends run (NFS and file SRs among them) says it is full, where XAPI says SR_FULL.
_NO_ROOM = {
    "HOST_NOT_ENOUGH_FREE_MEMORY",
    "HOST_NOT_ENOUGH_PCPUS",
    "SR_FULL",
    "SR_BACKEND_FAILURE_44",
}
#: The host or pool cannot do it now: another host may (534, retryable).
_UNAVAILABLE = {
    "HOST_OFFLINE",
    "HOST_NOT_LIVE",
    "HOST_DISABLED",
    "HOST_DISABLED_UNTIL_REBOOT",
    "HOST_IS_SLAVE",
    "HOST_STILL_BOOTING",
    "HOST_IN_EMERGENCY_MODE",
    "HOST_NOT_ENABLED",
    "CANNOT_CONTACT_HOST",
    "TOO_BUSY",
    "SR_UNAVAILABLE",
    "SR_NOT_ATTACHED",
    "SR_NO_PBDS",
}
#: A race with another actor (the VM changed state, an object vanished, a device is busy): the
#: retried job looks the resource up again by its Stratus id and decides afresh.
_RACES = {
    "HANDLE_INVALID",
    "VM_BAD_POWER_STATE",
    "OTHER_OPERATION_IN_PROGRESS",
    "OPERATION_BLOCKED",
    "VDI_IN_USE",
    "DEVICE_ALREADY_ATTACHED",
    "DEVICE_ALREADY_DETACHED",
    "TASK_CANCELLED",
    "VM_MIGRATE_FAILED",
    "PBD_EXISTS",
}


def translate_failure(details: Sequence[object], action: str) -> DriverError:
    """Map a XAPI error description `[code, params...]` to the Stratus error, keeping it whole."""
    code = str(details[0]) if details else "UNKNOWN_XENAPI_ERROR"
    params = ", ".join(str(p) for p in details[1:])
    message = f"{action}: XenServer {code}" + (f" ({params})" if params else "")
    if code in _UNSUPPORTED:
        return UnsupportedOperationError(message)
    if code in _NO_ROOM:
        return InsufficientHostCapacityError(message)
    if code in _UNAVAILABLE:
        return ResourceUnavailableError(message)
    if code in _RACES:
        return DriverError(message, retryable=True)
    return DriverError(message, retryable=False)
