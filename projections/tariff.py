"""An optional tariff: what an hour of each usage type costs, per offering.

A tariff file (JSON, or TOML when the name ends in .toml) looks like::

    currency = "EUR"
    [[rates]]
    usage_type = "RUNNING_VM"          # name or numeric id
    offering_id = "1f0c...e2"          # optional: this offering only
    price_per_hour = "0.05"            # per resource-hour
    [[rates]]
    usage_type = "VOLUME"
    price_per_gib_hour = "0.0001"      # per GiB-hour (size-metered types)

The most specific rate wins (offering over type-wide). Prices are decimals, kept exact: money is
never a float here.
"""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from projections.usage_types import UsageType
from projections.usage_windows import MS_PER_HOUR

BYTES_PER_GIB = 1024**3


class Rate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    usage_type: UsageType
    offering_id: UUID | None = None
    price_per_hour: Decimal = Field(default=Decimal(0), ge=0)
    price_per_gib_hour: Decimal = Field(default=Decimal(0), ge=0)

    @field_validator("usage_type", mode="before")
    @classmethod
    def _usage_type(cls, value: object) -> UsageType:
        if isinstance(value, int):
            return UsageType(value)
        return UsageType.parse(str(value))


class Tariff(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str = Field(default="USD", min_length=1, max_length=8)
    rates: list[Rate] = Field(default_factory=list)

    def rate_for(self, usage_type: UsageType, offering_id: UUID | None) -> Rate | None:
        general = None
        for rate in self.rates:
            if rate.usage_type != usage_type:
                continue
            if rate.offering_id is not None and rate.offering_id == offering_id:
                return rate
            if rate.offering_id is None:
                general = rate
        return general

    def cost(
        self, usage_type: UsageType, offering_id: UUID | None, usage_ms: int, byte_ms: int
    ) -> Decimal:
        """Cost of `usage_ms` resource-milliseconds and `byte_ms` byte-milliseconds."""
        rate = self.rate_for(usage_type, offering_id)
        if rate is None:
            return Decimal(0)
        hours = Decimal(usage_ms) / MS_PER_HOUR
        gib_hours = Decimal(byte_ms) / (MS_PER_HOUR * BYTES_PER_GIB)
        return hours * rate.price_per_hour + gib_hours * rate.price_per_gib_hour

    @classmethod
    def load(cls, path: Path) -> Tariff:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        return cls.model_validate(data)
