"""What a volume's state allows: the checks of each volume job, at run time on the aggregate
and at submission on the read models (so the API refuses with a 4xx what the job would refuse)."""

from __future__ import annotations

from uuid import UUID

from domain.errors import (
    IllegalStateTransition,
    InvalidParameter,
    ResourceInUse,
)
from domain.virtual_machine import VmState
from domain.volume import Volume, VolumeState, VolumeType
from domain.volume_requests import (
    MigrateVolumeRequest,
    ResizeVolumeRequest,
    VolumeOperation,
    VolumeRequest,
)

_V = VolumeState
#: The states each operation starts from.
ALLOWED_FROM: dict[VolumeOperation, frozenset[VolumeState]] = {
    VolumeOperation.ATTACH: frozenset({_V.ALLOCATED, _V.READY}),
    VolumeOperation.DETACH: frozenset({_V.READY, _V.ALLOCATED}),
    VolumeOperation.RESIZE: frozenset({_V.ALLOCATED, _V.READY}),
    VolumeOperation.MIGRATE: frozenset({_V.READY}),
    # Destroy/Expunging: a delete that failed past its point of no return is finished by the next.
    VolumeOperation.DELETE: frozenset({_V.ALLOCATED, _V.READY, _V.DESTROY, _V.EXPUNGING}),
}
#: The VM states a volume may be attached to or detached from (CloudStack's check).
VM_STATES_FOR_ATTACHMENT = frozenset({VmState.RUNNING, VmState.STOPPED})


def check_allowed(volume: Volume, operation: VolumeOperation) -> None:
    """At run time: refuse an operation the volume's state does not allow (431)."""
    if volume.state not in ALLOWED_FROM[operation]:
        raise IllegalStateTransition(
            f"cannot {operation.value} volume {volume.name} in state {volume.state} "
            f"(it must be {' or '.join(sorted(ALLOWED_FROM[operation]))})"
        )


def check_new_size(name: str, current: int, wanted: int, shrink_ok: bool) -> None:
    if wanted <= 0:
        raise InvalidParameter(field="size_gib", message="must be positive")
    if wanted < current and not shrink_ok:
        raise InvalidParameter(
            field="size_gib",
            message=f"volume {name} is {current} bytes; shrinking it to {wanted} bytes needs "
            "shrink_ok",
        )


def refusal_at_submission(
    request: VolumeRequest,
    *,
    name: str,
    state: str,
    volume_type: str,
    attached_to: UUID | None,
    size_bytes: int,
    vm_state: str | None = None,
    vm_name: str | None = None,
    pool_id: UUID | None = None,
) -> Exception | None:
    """At submission, from the read models: a refusal when they already show the operation
    cannot succeed. A busy (transitional) volume is not judged: the job queues and checks again
    when its turn comes. `vm_*` describe the VM attached to, or to attach to."""
    operation = request.operation
    volume_state = VolumeState(state)
    if volume_state is _V.EXPUNGED:
        return IllegalStateTransition(f"volume {name} has been deleted")
    if volume_state in (_V.DESTROY, _V.EXPUNGING) and operation is not VolumeOperation.DELETE:
        return IllegalStateTransition(f"volume {name} is being deleted")
    if operation is VolumeOperation.ATTACH:
        if volume_type != VolumeType.DATADISK.value:
            return InvalidParameter(f"volume {name} is a root volume and cannot be attached")
        if attached_to is not None:
            return ResourceInUse(f"volume {name} is already attached to a virtual machine")
        if vm_state is not None and VmState(vm_state) not in _VM_STATES_OR_BUSY:
            return IllegalStateTransition(
                f"cannot attach volume {name} to virtual machine {vm_name} in state {vm_state} "
                "(it must be Running or Stopped)"
            )
    if operation is VolumeOperation.DETACH:
        if volume_type != VolumeType.DATADISK.value:
            return InvalidParameter(f"volume {name} is a root volume and cannot be detached")
        if attached_to is None:
            return IllegalStateTransition(f"volume {name} is not attached")
    if operation is VolumeOperation.DELETE and attached_to is not None:
        return ResourceInUse(
            f"volume {name} is attached to a virtual machine; detach it before deleting it"
        )
    if isinstance(request, ResizeVolumeRequest):
        try:
            check_new_size(name, size_bytes, request.size_bytes, request.shrink_ok)
        except InvalidParameter as error:
            return error
    if isinstance(request, MigrateVolumeRequest):
        if volume_state is _V.ALLOCATED:
            return IllegalStateTransition(
                f"volume {name} is not on primary storage yet (it is created when first attached)"
            )
        if request.pool_id == pool_id:
            return InvalidParameter(
                field="pool_id", message=f"volume {name} is already on that pool"
            )
        if vm_state == VmState.RUNNING.value:
            return IllegalStateTransition(
                f"volume {name} is attached to running VM {vm_name}: stop it before migrating "
                "the volume (live storage migration is not supported)"
            )
    return None


_VM_STATES_OR_BUSY = VM_STATES_FOR_ATTACHMENT | {
    VmState.STARTING,
    VmState.STOPPING,
    VmState.MIGRATING,
}
