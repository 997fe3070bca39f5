"""A CloudStack request's parameters, read the way CloudStack reads them.

Names are case-insensitive (`zoneId` and `zoneid` are one parameter); values are strings.
A missing required parameter and a value of the wrong form are errors 431 naming the
parameter, in CloudStack's own words; the typed `/v1` models validate the rest, and their
refusals are renamed back to the CloudStack parameter (`CloudStackError.from_validation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import Enum
from typing import TypeVar
from uuid import UUID

from domain.errors import ErrorCode
from domain.text import forbidden_character

E = TypeVar("E", bound=Enum)

#: CloudStack's default and largest page size.
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 500
MAX_PAGE = 100_000


class CloudStackError(Exception):
    """A refusal with CloudStack's error code (also the HTTP status)."""

    def __init__(self, errorcode: int, text: str) -> None:
        super().__init__(text)
        self.errorcode = errorcode
        self.text = text


class Params:
    def __init__(self, command: str, given: Mapping[str, str]) -> None:
        self.command = command
        self.values = {name.lower(): value for name, value in given.items()}

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.values.get(name.lower())
        if value is None or value == "":
            if required:
                raise self.missing(name)
            return None
        reason = forbidden_character(value)
        if reason is not None:
            raise self.invalid(name, value, reason)
        return value

    def required(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def uuid(self, name: str, *, required: bool = False) -> UUID | None:
        value = self.text(name, required=required)
        if value is None:
            return None
        try:
            return UUID(value)
        except ValueError:
            raise self.invalid(name, value, "it is not a UUID") from None

    def required_uuid(self, name: str) -> UUID:
        value = self.uuid(name, required=True)
        assert value is not None
        return value

    def integer(self, name: str, *, low: int = 0, high: int = 2**31 - 1) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise self.invalid(name, value, "it is not a whole number") from None
        if not low <= number <= high:
            raise self.invalid(name, value, f"it must be between {low} and {high}")
        return number

    def choice(self, name: str, kinds: type[E]) -> E | None:
        """One of an enum's values (CloudStack's states and levels, as Stratus names them)."""
        value = self.text(name)
        if value is None:
            return None
        try:
            return kinds(value)
        except ValueError:
            known = ", ".join(str(k.value) for k in kinds)
            raise self.invalid(name, value, f"one of {known}") from None

    def flag(self, name: str) -> bool:
        value = self.text(name)
        if value is None:
            return False
        if value.lower() not in ("true", "false"):
            raise self.invalid(name, value, "it must be true or false")
        return value.lower() == "true"

    def day(self, name: str) -> datetime:
        """`yyyy-MM-dd` (the day's start) or `yyyy-MM-dd HH:mm:ss`, in UTC, as
        listUsageRecords takes its dates."""
        value = self.required(name)
        for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
            try:
                return datetime.strptime(value, pattern).replace(tzinfo=UTC)
            except ValueError:
                continue
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise self.invalid(name, value, "use yyyy-MM-dd or yyyy-MM-dd HH:mm:ss") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)

    def page(self) -> tuple[int, int]:
        """(page, pagesize), CloudStack's paging: 1-based pages of at most 500."""
        size = self.integer("pagesize", low=1, high=MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        number = self.integer("page", low=1, high=MAX_PAGE) or 1
        return number, size

    def missing(self, name: str) -> CloudStackError:
        return CloudStackError(
            int(ErrorCode.PARAM_ERROR),
            f"Unable to execute API command {self.command.lower()} due to missing parameter "
            f"{name.lower()}",
        )

    def invalid(self, name: str, value: str, reason: str) -> CloudStackError:
        shown = value if len(value) <= 80 else value[:80] + "..."
        if forbidden_character(shown) is not None:
            shown = "(unprintable)"
        return CloudStackError(
            int(ErrorCode.PARAM_ERROR),
            f"Unable to execute API command {self.command.lower()} due to invalid value "
            f"{shown!r} for parameter {name.lower()}: {reason}",
        )
