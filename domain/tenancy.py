"""Building the tenancy: domains, accounts, their users and keys, their limits.

Each operation is one decision over the aggregates it touches (the parent domain and the new
one, the account and its first user), so a name is unique in its domain even when two admins
race, and each is idempotent by id: making the same thing again returns what exists.

These are called by the API itself, not by a job: a new key pair is shown to its caller once,
and a secret may not travel through a workflow's input or result (ARCHITECTURE rule 10), as
CloudStack's createAccount and registerUserKeys are synchronous too.
"""

from __future__ import annotations

from uuid import UUID

from domain.account import Account, AccountState, AccountType
from domain.cloud import Cloud, Decision
from domain.domain_tree import (
    ROOT_DOMAIN_ID,
    ROOT_DOMAIN_NAME,
    Domain,
    DomainState,
    check_depth,
    subdomain_path,
)
from domain.errors import InvalidParameter, NotFound
from domain.ids import derived_id
from domain.resource_limits import check_limit_value
from domain.user import User, UserState


def ensure_root_domain(cloud: Cloud) -> Domain:
    def decide(d: Decision) -> Domain:
        existing = d.find(Domain, ROOT_DOMAIN_ID)
        if existing is not None:
            return existing
        return d.add(
            Domain.create_with_id(
                ROOT_DOMAIN_ID,
                name=ROOT_DOMAIN_NAME,
                parent_id=None,
                path=ROOT_DOMAIN_NAME,
                ancestry=[str(ROOT_DOMAIN_ID)],
            )
        )

    return cloud.decide(decide)


def _active_domain(d: Decision, domain_id: UUID, field: str | None) -> Domain:
    """The domain, or NotFound naming the request field that named it (None: the path)."""
    domain = d.find(Domain, domain_id)
    if domain is None or domain.state is not DomainState.ACTIVE:
        raise NotFound(f"domain {domain_id} not found", field=field)
    return domain


def create_domain(cloud: Cloud, domain_id: UUID, name: str, parent_id: UUID) -> Domain:
    ensure_root_domain(cloud)

    def decide(d: Decision) -> Domain:
        existing = d.find(Domain, domain_id)
        if existing is not None:
            return existing
        parent = _active_domain(d, parent_id, "parent_id")
        check_depth(parent)
        parent.check_child_name_free(name)
        created = d.add(
            Domain.create_with_id(
                domain_id,
                name=name,
                parent_id=parent.id,
                path=subdomain_path(parent, name),
                ancestry=[*parent.ancestry, str(domain_id)],
            )
        )
        parent.add_subdomain(name, str(domain_id))
        return created

    return cloud.decide(decide)


def delete_domain(cloud: Cloud, domain_id: UUID) -> Domain:
    """Only an empty domain goes (no subdomain, no account): CloudStack's cleanup=false."""

    def decide(d: Decision) -> Domain:
        domain = _active_domain(d, domain_id, None)
        domain.check_removable()
        assert domain.parent_id is not None
        d.get(Domain, domain.parent_id).remove_subdomain(domain.name)
        domain.remove()
        return domain

    return cloud.decide(decide)


def first_user_id(account_id: UUID) -> UUID:
    return derived_id(account_id, "first-user")


def open_account(
    cloud: Cloud,
    account_id: UUID,
    name: str,
    account_type: str,
    api_key_sha256: str,
    *,
    domain_id: UUID = ROOT_DOMAIN_ID,
    username: str | None = None,
    user_id: UUID | None = None,
) -> Account:
    """A new account in a domain, with its first user holding the given key."""
    try:
        role = AccountType(account_type)
    except ValueError:
        roles = ", ".join(t.value for t in AccountType)
        raise InvalidParameter(
            f"unknown account type {account_type!r}; one of {roles}", field="account_type"
        ) from None
    ensure_root_domain(cloud)
    user_id = user_id or first_user_id(account_id)
    username = username or name

    def decide(d: Decision) -> Account:
        existing = d.find(Account, account_id)
        if existing is not None:
            return existing
        domain = _active_domain(d, domain_id, "domain_id")
        if role is AccountType.ADMIN and domain.id != ROOT_DOMAIN_ID:
            raise InvalidParameter(
                "a root admin account belongs to the ROOT domain", field="domain_id"
            )
        domain.check_account_name_free(name)
        domain.check_username_free(username)
        account = d.add(
            Account.create_with_id(
                account_id,
                name=name,
                account_type=role.value,
                domain=domain.path,
                domain_id=domain.id,
                domain_ancestry=list(domain.ancestry),
            )
        )
        domain.add_account(name, str(account_id))
        _add_user(d, domain, account, user_id, username, api_key_sha256)
        return account

    return cloud.decide(decide)


def _add_user(
    d: Decision, domain: Domain, account: Account, user_id: UUID, name: str, digest: str
) -> User:
    domain.check_username_free(name)
    user = d.add(
        User.create_with_id(user_id, account_id=account.id, name=name, api_key_sha256=digest)
    )
    domain.add_user(name, str(user_id))
    account.add_user(str(user_id))
    return user


def add_user(cloud: Cloud, user_id: UUID, account_id: UUID, name: str, api_key_sha256: str) -> User:
    def decide(d: Decision) -> User:
        existing = d.find(User, user_id)
        if existing is not None:
            return existing
        account = d.find(Account, account_id)
        if account is None:
            raise NotFound(f"account {account_id} not found", field="account_id")
        if account.domain_id is None:
            raise InvalidParameter(
                f"account {account.name} predates domains and holds one key only",
                field="account_id",
            )
        domain = _active_domain(d, account.domain_id, "account_id")
        return _add_user(d, domain, account, user_id, name, api_key_sha256)

    return cloud.decide(decide)


def register_user_keys(cloud: Cloud, user_id: UUID, api_key_sha256: str) -> User:
    def decide(d: Decision) -> User:
        user = d.get(User, user_id)
        if user.api_key_sha256 != api_key_sha256:
            user.register_keys(api_key_sha256)
        return user

    return cloud.decide(decide)


def set_account_state(cloud: Cloud, account_id: UUID, state: AccountState) -> Account:
    def decide(d: Decision) -> Account:
        account = d.get(Account, account_id)
        if account.state is not state:
            account.set_state(state.value)
        return account

    return cloud.decide(decide)


def set_user_state(cloud: Cloud, user_id: UUID, state: UserState) -> User:
    def decide(d: Decision) -> User:
        user = d.get(User, user_id)
        if user.state is not state:
            user.set_state(state.value)
        return user

    return cloud.decide(decide)


def check_limitable(owner: Account | Domain) -> None:
    """The ROOT domain is the whole cloud (its capacity is its limit) and a root admin runs
    the cloud: neither is limited, as in CloudStack."""
    if isinstance(owner, Domain) and owner.parent_id is None:
        raise InvalidParameter("the ROOT domain has no limits: set them on its subdomains")
    if isinstance(owner, Account) and owner.account_type is AccountType.ADMIN:
        raise InvalidParameter(f"{owner.name} is a root admin account, which no limit applies to")


def set_resource_limit(
    cloud: Cloud, owner_id: UUID, resource: str, maximum: int
) -> Account | Domain:
    """Set a limit on an account or a domain (whichever `owner_id` names); -1 lifts it."""
    kind = check_limit_value(resource, maximum)

    def decide(d: Decision) -> Account | Domain:
        owner: Account | Domain | None = d.find(Account, owner_id) or d.find(Domain, owner_id)
        if owner is None:
            raise NotFound(f"account or domain {owner_id} not found")
        check_limitable(owner)
        if owner.limits.get(kind.value) != maximum:
            owner.set_limit(kind.value, maximum)
        return owner

    return cloud.decide(decide)
