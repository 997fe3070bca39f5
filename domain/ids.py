"""Deterministic ids.

A job's resources get ids derived from the job id (uuid5), so the API can answer 202 with the
id of the VM it is about to create before any worker runs, and an activity that runs twice
creates the same aggregate twice, which the event store refuses instead of duplicating.
"""

from __future__ import annotations

from uuid import UUID, uuid5

STRATUS_NAMESPACE = UUID("6c2a4f4e-3f0b-5b7e-9a4c-2f1d7a9e0b51")


def derived_id(parent: UUID | str, purpose: str) -> UUID:
    """The id of the thing `parent` (usually a job) makes for `purpose`."""
    return uuid5(STRATUS_NAMESPACE, f"{parent}/{purpose}")


def named_id(kind: str, name: str) -> UUID:
    """A stable id for an inventory item known by its name (seeded zones, offerings, ...)."""
    return uuid5(STRATUS_NAMESPACE, f"{kind}:{name}")


def mac_address_for(nic_owner: UUID | str, network_id: UUID | str) -> str:
    """A locally administered MAC that is the same every time the same NIC is planned."""
    digest = derived_id(nic_owner, f"nic/{network_id}").bytes
    return "02:00:" + ":".join(f"{b:02x}" for b in digest[:4])
