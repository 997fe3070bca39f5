"""Request and response models of domains, accounts, users, keys and limits."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from domain.account import AccountType
from domain.resource_limits import MAX_LIMIT, UNLIMITED, ResourceType

#: Names that log in and appear in paths: letters, digits and `._-`, as CloudStack allows.
TENANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _not_a_boolean(value: Any) -> Any:
    """JSON's `false` is not a number (pydantic would read it as 0: a limit of nothing)."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


#: A limit: -1 (unlimited) or a count; `12.0` is the integer 12, as JSON Schema has it.
LimitValue = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=UNLIMITED, le=MAX_LIMIT)]


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TENANT_NAME_PATTERN, max_length=64)
    parent_id: UUID | None = Field(
        default=None, description="the parent domain; default: the caller's own domain"
    )


class DomainPublic(BaseModel):
    id: UUID
    name: str
    path: str = Field(description='names from ROOT down: "ROOT/sales/emea"')
    parent_id: UUID | None
    state: str
    limits: dict[str, int] = Field(description="resource type -> maximum (-1: unlimited)")
    created: datetime


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TENANT_NAME_PATTERN, max_length=64)
    account_type: AccountType = Field(
        default=AccountType.USER,
        description="User, DomainAdmin or Admin (the root admin, in ROOT only)",
    )
    domain_id: UUID | None = Field(default=None, description="default: the caller's domain")
    username: str | None = Field(
        default=None,
        pattern=TENANT_NAME_PATTERN,
        max_length=64,
        description="the first user's name; default: the account's",
    )


class AccountPublic(BaseModel):
    id: UUID
    name: str
    account_type: AccountType
    role: str
    domain_id: UUID | None
    domain: str = Field(description="the domain's path")
    state: str
    limits: dict[str, int]
    users: list[UUID]
    created: datetime


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=TENANT_NAME_PATTERN, max_length=64)


class UserPublic(BaseModel):
    id: UUID
    name: str
    account_id: UUID
    state: str
    keys_registered: int = Field(description="how many key pairs the user has had")
    created: datetime


class KeyPairPublic(BaseModel):
    """Shown once: the secret key is never shown again (register new keys if it is lost)."""

    user_id: UUID
    api_key: str
    secret_key: str


class AccountCreated(BaseModel):
    account: AccountPublic
    user: UserPublic
    keys: KeyPairPublic


class UserCreated(BaseModel):
    user: UserPublic
    keys: KeyPairPublic


class LimitUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max: LimitValue = Field(ge=UNLIMITED, le=MAX_LIMIT, description="-1: unlimited")


class LimitPublic(BaseModel):
    resource_type: ResourceType
    resource_type_id: int = Field(description="CloudStack's resourcetype")
    max: int
    used: int


def domain_public(row: dict[str, Any]) -> DomainPublic:
    data = row["data"]
    return DomainPublic(
        id=row["id"],
        name=row["name"],
        path=data["path"],
        parent_id=data.get("parent_id"),
        state=data["state"],
        limits=data.get("limits", {}),
        created=row["created"],
    )


def account_public(row: dict[str, Any]) -> AccountPublic:
    data = row["data"]
    account_type = AccountType(data["account_type"])
    return AccountPublic(
        id=row["id"],
        name=row["name"],
        account_type=account_type,
        role=account_type.role_name,
        domain_id=data.get("domain_id"),
        domain=data.get("domain") or "ROOT",
        state=data["state"],
        limits=data.get("limits", {}),
        users=data.get("users", []),
        created=row["created"],
    )


def user_public(row: dict[str, Any]) -> UserPublic:
    data = row["data"]
    return UserPublic(
        id=row["id"],
        name=row["name"],
        account_id=data["account_id"],
        state=data["state"],
        keys_registered=data.get("keys_registered", 1),
        created=row["created"],
    )
