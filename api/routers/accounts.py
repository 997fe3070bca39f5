"""Accounts and their users (admins), key pairs (a user's own, or its admin's), limits.

A new account comes with its first user and that user's key pair; the secret key is in the
201 answer and nowhere else it can be read (api/credentials.py keeps it encrypted). A domain
admin creates user and domain-admin accounts in its subtree; only the root admin creates
another root admin. Nobody disables its own account or user, and a domain admin does not set
its own account's limits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from fastapi import APIRouter, Response, status

from api.auth import Caller, CurrentCaller, TenancyAdminCaller
from api.credentials import KeyPair, new_key_pair
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import forbidden
from api.models import Listing
from api.reads import consistent_read
from api.resource_usage import limits_of
from api.services import CloudServices
from api.tenancy_access import (
    administered_domain,
    refuse_own_account,
    visible_row,
    wait_for_inventory,
)
from api.tenancy_models import (
    AccountCreate,
    AccountCreated,
    AccountPublic,
    KeyPairPublic,
    LimitPublic,
    LimitUpdate,
    UserCreate,
    UserCreated,
    UserPublic,
    account_public,
    user_public,
)
from domain.account import AccountState, AccountType
from domain.resource_limits import ResourceType
from domain.tenancy import (
    add_user,
    first_user_id,
    open_account,
    register_user_keys,
    set_account_state,
    set_resource_limit,
    set_user_state,
)
from domain.user import User, UserState
from projections.inventory import inventory_row
from projections.tenancy_listing import page_accounts

router = APIRouter(prefix="/v1", tags=["accounts"])
ACCOUNT_LOC = ("path", "account_id")
USER_LOC = ("path", "user_id")


@router.post(
    "/accounts",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountCreated,
    summary="Create an account with its first user and key pair (admins)",
)
def create_account(
    body: AccountCreate, caller: TenancyAdminCaller, services: Services
) -> AccountCreated:
    if body.account_type is AccountType.ADMIN and not caller.is_admin:
        raise forbidden("only the root admin creates root admin accounts")
    domain = administered_domain(services, caller, body.domain_id, "domain_id")
    account_id = uuid.uuid4()
    user_id = first_user_id(account_id)
    pair = new_key_pair()
    with kept_for(services, user_id, pair):
        account = open_account(
            services.cloud,
            account_id,
            body.name,
            body.account_type.value,
            pair.digest,
            domain_id=domain.id,
            username=body.username,
            user_id=user_id,
        )
    user = services.cloud.load(User, user_id)
    wait_for_inventory(services)
    return AccountCreated(
        account=account_public(inventory_row(account)),
        user=user_public(inventory_row(user)),
        keys=_shown_once(user_id, pair),
    )


@router.get("/accounts", response_model=Listing[AccountPublic], summary="List accounts")
def list_accounts(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    domain_id: UUID | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[AccountPublic]:
    consistent_read(services, "inventory", consistent, response)
    found = page_accounts(
        services.reads.pool,
        accounts=caller.visible_accounts(),
        domain_id=domain_id,
        limit=limit,
        cursor=cursor,
        page=page,
    )
    return Listing[AccountPublic](
        data=[account_public(r) for r in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/accounts/{account_id}", response_model=AccountPublic, summary="Show an account")
def get_account(account_id: UUID, caller: CurrentCaller, services: Services) -> AccountPublic:
    return account_public(visible_row(services, caller, "account", account_id, ACCOUNT_LOC))


@router.post(
    "/accounts/{account_id}/disable",
    response_model=AccountPublic,
    summary="Disable an account: its keys stop working at once (admins)",
)
def disable_account(
    account_id: UUID, caller: TenancyAdminCaller, services: Services
) -> AccountPublic:
    return _set_account_state(services, caller, account_id, AccountState.DISABLED)


@router.post("/accounts/{account_id}/enable", response_model=AccountPublic, summary="Enable")
def enable_account(
    account_id: UUID, caller: TenancyAdminCaller, services: Services
) -> AccountPublic:
    return _set_account_state(services, caller, account_id, AccountState.ENABLED)


def _set_account_state(
    services: CloudServices, caller: Caller, account_id: UUID, state: AccountState
) -> AccountPublic:
    visible_row(services, caller, "account", account_id, ACCOUNT_LOC)
    refuse_own_account(
        caller, account_id, f"{'disable' if state is AccountState.DISABLED else 'enable'}"
    )
    set_account_state(services.cloud, account_id, state)
    wait_for_inventory(services)
    return account_public(visible_row(services, caller, "account", account_id, ACCOUNT_LOC))


@router.get(
    "/accounts/{account_id}/limits",
    response_model=list[LimitPublic],
    summary="An account's limits and what it uses",
)
def get_account_limits(
    account_id: UUID, caller: CurrentCaller, services: Services
) -> list[LimitPublic]:
    return limits_of(services, visible_row(services, caller, "account", account_id, ACCOUNT_LOC))


@router.put(
    "/accounts/{account_id}/limits/{resource_type}",
    response_model=list[LimitPublic],
    summary="Set an account's limit on a resource type (-1: unlimited; admins)",
)
def set_account_limit(
    account_id: UUID,
    resource_type: ResourceType,
    body: LimitUpdate,
    caller: TenancyAdminCaller,
    services: Services,
) -> list[LimitPublic]:
    visible_row(services, caller, "account", account_id, ACCOUNT_LOC)
    refuse_own_account(caller, account_id, "limit")
    set_resource_limit(services.cloud, account_id, resource_type.value, body.max)
    wait_for_inventory(services)
    return limits_of(services, visible_row(services, caller, "account", account_id, ACCOUNT_LOC))


@router.post(
    "/accounts/{account_id}/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserCreated,
    summary="Add a user with its key pair to an account (admins)",
)
def create_user(
    account_id: UUID, body: UserCreate, caller: TenancyAdminCaller, services: Services
) -> UserCreated:
    visible_row(services, caller, "account", account_id, ACCOUNT_LOC)
    user_id = uuid.uuid4()
    pair = new_key_pair()
    with kept_for(services, user_id, pair):
        user = add_user(services.cloud, user_id, account_id, body.username, pair.digest)
    wait_for_inventory(services)
    return UserCreated(user=user_public(inventory_row(user)), keys=_shown_once(user_id, pair))


@router.get(
    "/accounts/{account_id}/users",
    response_model=Listing[UserPublic],
    summary="List an account's users",
)
def list_users(account_id: UUID, caller: CurrentCaller, services: Services) -> Listing[UserPublic]:
    account = visible_row(services, caller, "account", account_id, ACCOUNT_LOC)
    users = [services.reads.get("inventory", UUID(u)) for u in account["data"].get("users", [])]
    found = [user_public(row) for row in users if row is not None]
    return Listing[UserPublic](data=found, count=len(found))


@router.get("/users/{user_id}", response_model=UserPublic, summary="Show a user")
def get_user(user_id: UUID, caller: CurrentCaller, services: Services) -> UserPublic:
    return user_public(visible_row(services, caller, "user", user_id, USER_LOC))


@router.post(
    "/users/{user_id}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyPairPublic,
    summary="Register a new key pair: the old one stops working at once",
)
def register_keys(user_id: UUID, caller: CurrentCaller, services: Services) -> KeyPairPublic:
    row = visible_row(services, caller, "user", user_id, USER_LOC)
    if user_id != caller.user_id and not (caller.is_admin or caller.is_domain_admin):
        raise forbidden("a user registers its own keys only")
    pair = new_key_pair()
    with kept_for(services, row["id"], pair):
        register_user_keys(services.cloud, user_id, pair.digest)
    services.secrets.forget_all_but(user_id, pair.digest)
    wait_for_inventory(services)
    return _shown_once(user_id, pair)


@router.post(
    "/users/{user_id}/disable",
    response_model=UserPublic,
    summary="Disable a user: its keys stop working at once (admins)",
)
def disable_user(user_id: UUID, caller: TenancyAdminCaller, services: Services) -> UserPublic:
    return _set_user_state(services, caller, user_id, UserState.DISABLED)


@router.post("/users/{user_id}/enable", response_model=UserPublic, summary="Enable a user")
def enable_user(user_id: UUID, caller: TenancyAdminCaller, services: Services) -> UserPublic:
    return _set_user_state(services, caller, user_id, UserState.ENABLED)


def _set_user_state(
    services: CloudServices, caller: Caller, user_id: UUID, state: UserState
) -> UserPublic:
    visible_row(services, caller, "user", user_id, USER_LOC)
    if user_id == caller.user_id:
        raise forbidden("you cannot change the state of your own user")
    set_user_state(services.cloud, user_id, state)
    wait_for_inventory(services)
    return user_public(visible_row(services, caller, "user", user_id, USER_LOC))


@contextmanager
def kept_for(services: CloudServices, user_id: UUID, pair: KeyPair) -> Iterator[None]:
    """Keep the pair's secret while its digest is recorded; if recording is refused (a name
    taken, a domain gone), the secret goes too: no secret outlives a user that never was."""
    services.secrets.keep(user_id, pair)
    try:
        yield
    except BaseException:
        services.secrets.forget(pair.digest)
        raise


def _shown_once(user_id: UUID, pair: KeyPair) -> KeyPairPublic:
    return KeyPairPublic(user_id=user_id, api_key=pair.api_key, secret_key=pair.secret_key)
