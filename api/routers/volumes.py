"""/v1/volumes: listing volumes (listVolumes)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api.auth import CurrentCaller
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import not_found
from api.models import Listing, VolumePublic
from api.reads import consistent_read, scoped_account

router = APIRouter(prefix="/v1/volumes", tags=["volumes"])
TABLE = "volumes"


@router.get("", response_model=Listing[VolumePublic], summary="List volumes")
def list_volumes(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    zone_id: UUID | None = None,
    vm_id: UUID | None = None,
    state: str | None = None,
    account_id: UUID | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[VolumePublic]:
    consistent_read(services, TABLE, consistent, response)
    filters = {
        "zone_id": zone_id,
        "vm_id": vm_id,
        "state": state,
        "account_id": scoped_account(caller, account_id),
    }
    found = services.reads.page(TABLE, filters, limit=limit, cursor=cursor, page=page)
    return Listing[VolumePublic](
        data=[VolumePublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{volume_id}", response_model=VolumePublic, summary="Show a volume")
def get_volume(
    volume_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> VolumePublic:
    consistent_read(services, TABLE, consistent, response)
    row = services.reads.get(TABLE, volume_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"volume {volume_id}", ("path", "volume_id"))
    return VolumePublic(**row)
