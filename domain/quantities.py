"""The ranges a real cloud's numbers live in.

Every number a request carries has the range a real device or a sane operator could give it:
a storage pool of 2^63 bytes, a delay of 10^30 seconds or a page number past PostgreSQL's
bigint are typos or attacks, and refused with a 422 naming the field before they reach an
event (ARCHITECTURE rule 13). Floats are finite: JSON has no NaN, though Python's parser
accepts one.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from domain.catalog import GIB

#: 8 PiB: larger than any one storage pool or secondary store Stratus would be given, and the
#: largest integer a JSON client (a double) still holds exactly.
MAX_STORAGE_BYTES = 2**53
#: 64 TiB: the largest virtual disk the hypervisors Stratus drives accept (VMware's limit).
MAX_DISK_GIB = 65536
MAX_DISK_BYTES = MAX_DISK_GIB * GIB
#: A day: no interval, grace or delay a cluster is configured with is longer.
DAY_SECONDS = 86400.0
#: How far a listing can be paged by number (50 million rows at the largest page size).
MAX_PAGE = 100_000

#: Bytes of a storage pool or store.
StorageBytes = Annotated[int, Field(gt=0, le=MAX_STORAGE_BYTES)]
#: A disk size in GiB.
DiskGib = Annotated[int, Field(ge=1, le=MAX_DISK_GIB)]
#: A cpu, memory or storage overprovisioning factor.
OverprovisioningFactor = Annotated[float, Field(ge=1.0, le=100.0, allow_inf_nan=False)]
#: A threshold as a fraction of capacity, above 0.
CapacityFraction = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
