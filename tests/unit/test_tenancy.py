"""Domains, accounts, users and limits, on the in-memory event store."""

from __future__ import annotations

import uuid

import pytest

from domain.account import Account, AccountState, AccountType, api_key_digest
from domain.cloud import Cloud
from domain.domain_tree import MAX_DOMAIN_DEPTH, ROOT_DOMAIN_ID, Domain
from domain.errors import ErrorCode, InvalidParameter, NotFound, ResourceInUse
from domain.resource_limits import (
    LimitHolder,
    ResourceLimitExceeded,
    ResourceType,
    check_within_limits,
)
from domain.tenancy import (
    add_user,
    create_domain,
    delete_domain,
    first_user_id,
    open_account,
    register_user_keys,
    set_account_state,
    set_resource_limit,
    set_user_state,
)
from domain.user import User, UserState


def test_a_subdomain_records_its_path_and_every_ancestor(memory_cloud: Cloud) -> None:
    sales = create_domain(memory_cloud, uuid.uuid4(), "sales", ROOT_DOMAIN_ID)
    emea = create_domain(memory_cloud, uuid.uuid4(), "emea", sales.id)
    assert emea.path == "ROOT/sales/emea"
    assert emea.ancestry == [str(ROOT_DOMAIN_ID), str(sales.id), str(emea.id)]
    assert memory_cloud.load(Domain, sales.id).contains(emea.ancestry)
    assert not emea.contains(sales.ancestry)


def test_two_subdomains_of_one_parent_cannot_share_a_name(memory_cloud: Cloud) -> None:
    create_domain(memory_cloud, uuid.uuid4(), "sales", ROOT_DOMAIN_ID)
    with pytest.raises(InvalidParameter, match="already has a subdomain named sales"):
        create_domain(memory_cloud, uuid.uuid4(), "sales", ROOT_DOMAIN_ID)


def test_creating_the_same_domain_twice_returns_the_first(memory_cloud: Cloud) -> None:
    domain_id = uuid.uuid4()
    first = create_domain(memory_cloud, domain_id, "ops", ROOT_DOMAIN_ID)
    again = create_domain(memory_cloud, domain_id, "ops", ROOT_DOMAIN_ID)
    assert again.id == first.id and again.version == first.version


def test_domains_nest_only_to_the_maximum_depth(memory_cloud: Cloud) -> None:
    parent = ROOT_DOMAIN_ID
    for level in range(MAX_DOMAIN_DEPTH - 1):
        parent = create_domain(memory_cloud, uuid.uuid4(), f"d{level}", parent).id
    with pytest.raises(InvalidParameter, match="nest at most"):
        create_domain(memory_cloud, uuid.uuid4(), "too-deep", parent)


def test_a_domain_under_an_unknown_parent_is_refused(memory_cloud: Cloud) -> None:
    with pytest.raises(NotFound) as refused:
        create_domain(memory_cloud, uuid.uuid4(), "x", uuid.uuid4())
    assert refused.value.field == "parent_id"


def test_an_account_opens_in_its_domain_with_a_first_user_holding_the_key(
    memory_cloud: Cloud,
) -> None:
    sales = create_domain(memory_cloud, uuid.uuid4(), "sales", ROOT_DOMAIN_ID)
    account = open_account(
        memory_cloud,
        uuid.uuid4(),
        "acme",
        AccountType.USER.value,
        api_key_digest("k"),
        domain_id=sales.id,
    )
    assert account.domain == "ROOT/sales" and account.domain_id == sales.id
    assert account.domain_ancestry == [str(ROOT_DOMAIN_ID), str(sales.id)]
    user = memory_cloud.load(User, first_user_id(account.id))
    assert user.account_id == account.id and user.api_key_sha256 == api_key_digest("k")
    assert account.api_key_sha256 == ""  # the key is the user's, not the account's


def test_account_names_are_unique_in_a_domain_but_not_across_domains(
    memory_cloud: Cloud,
) -> None:
    sales = create_domain(memory_cloud, uuid.uuid4(), "sales", ROOT_DOMAIN_ID)
    open_account(memory_cloud, uuid.uuid4(), "acme", "User", "d1", username="a1")
    open_account(memory_cloud, uuid.uuid4(), "acme", "User", "d2", domain_id=sales.id)
    with pytest.raises(InvalidParameter, match="already has an account named acme"):
        open_account(memory_cloud, uuid.uuid4(), "acme", "User", "d3", username="a3")


def test_a_root_admin_account_lives_only_in_root(memory_cloud: Cloud) -> None:
    sales = create_domain(memory_cloud, uuid.uuid4(), "sales", ROOT_DOMAIN_ID)
    with pytest.raises(InvalidParameter, match="ROOT domain"):
        open_account(memory_cloud, uuid.uuid4(), "boss", "Admin", "d", domain_id=sales.id)


def test_an_unknown_account_type_is_refused_naming_the_roles(memory_cloud: Cloud) -> None:
    with pytest.raises(InvalidParameter, match="DomainAdmin") as refused:
        open_account(memory_cloud, uuid.uuid4(), "x", "Superuser", "d")
    assert refused.value.field == "account_type"


def test_usernames_are_unique_in_a_domain(memory_cloud: Cloud) -> None:
    account = open_account(memory_cloud, uuid.uuid4(), "acme", "User", "d1")
    with pytest.raises(InvalidParameter, match="user named acme"):
        add_user(memory_cloud, uuid.uuid4(), account.id, "acme", "d2")
    second = add_user(memory_cloud, uuid.uuid4(), account.id, "bob", "d3")
    assert str(second.id) in memory_cloud.load(Account, account.id).users


def test_registering_new_keys_replaces_the_digest_and_counts_the_rotation(
    memory_cloud: Cloud,
) -> None:
    account = open_account(memory_cloud, uuid.uuid4(), "acme", "User", "old")
    user = register_user_keys(memory_cloud, first_user_id(account.id), "new")
    assert user.api_key_sha256 == "new" and user.keys_registered == 2
    again = register_user_keys(memory_cloud, first_user_id(account.id), "new")
    assert again.version == user.version  # the same registration twice is one


def test_disabling_an_account_and_a_user_is_recorded_once(memory_cloud: Cloud) -> None:
    account = open_account(memory_cloud, uuid.uuid4(), "acme", "User", "k")
    disabled = set_account_state(memory_cloud, account.id, AccountState.DISABLED)
    assert disabled.state is AccountState.DISABLED
    assert set_account_state(memory_cloud, account.id, AccountState.DISABLED).version == (
        disabled.version
    )
    user = set_user_state(memory_cloud, first_user_id(account.id), UserState.DISABLED)
    assert user.state is UserState.DISABLED


def test_only_an_empty_domain_can_be_deleted(memory_cloud: Cloud) -> None:
    sales = create_domain(memory_cloud, uuid.uuid4(), "sales", ROOT_DOMAIN_ID)
    open_account(memory_cloud, uuid.uuid4(), "acme", "User", "k", domain_id=sales.id)
    with pytest.raises(ResourceInUse, match="1 account"):
        delete_domain(memory_cloud, sales.id)
    empty = create_domain(memory_cloud, uuid.uuid4(), "empty", ROOT_DOMAIN_ID)
    delete_domain(memory_cloud, empty.id)
    assert "empty" not in memory_cloud.load(Domain, ROOT_DOMAIN_ID).children
    with pytest.raises(NotFound):
        create_domain(memory_cloud, uuid.uuid4(), "under-deleted", empty.id)
    with pytest.raises(InvalidParameter, match="ROOT"):
        delete_domain(memory_cloud, ROOT_DOMAIN_ID)


def test_limits_are_set_on_accounts_and_domains_and_unknown_kinds_refused(
    memory_cloud: Cloud,
) -> None:
    account = open_account(memory_cloud, uuid.uuid4(), "acme", "User", "k")
    assert set_resource_limit(memory_cloud, account.id, "user_vm", 5).limits == {"user_vm": 5}
    sales = create_domain(memory_cloud, uuid.uuid4(), "sales", ROOT_DOMAIN_ID)
    assert set_resource_limit(memory_cloud, sales.id, "cpu", 64).limits == {"cpu": 64}
    with pytest.raises(InvalidParameter, match="unknown resource type"):
        set_resource_limit(memory_cloud, account.id, "gpus", 1)
    with pytest.raises(InvalidParameter, match="-1"):
        set_resource_limit(memory_cloud, account.id, "cpu", -2)


def test_a_request_past_any_holders_limit_is_refused_with_532_naming_it() -> None:
    account = LimitHolder("account acme", {"user_vm": 10}, {ResourceType.USER_VM: 3})
    domain = LimitHolder("domain ROOT/sales", {"cpu": 8}, {ResourceType.CPU: 6})
    check_within_limits({ResourceType.USER_VM: 1, ResourceType.CPU: 2}, [account, domain])
    with pytest.raises(ResourceLimitExceeded) as refused:
        check_within_limits({ResourceType.USER_VM: 1, ResourceType.CPU: 4}, [account, domain])
    assert refused.value.code == ErrorCode.RESOURCE_LIMIT
    assert "cpu limit of domain ROOT/sales is 8" in refused.value.message
    assert refused.value.field == "cpu"


def test_unlimited_and_giving_back_are_never_refused() -> None:
    full = LimitHolder("account acme", {"volume": 2, "cpu": -1}, {ResourceType.VOLUME: 5})
    check_within_limits({ResourceType.VOLUME: -1, ResourceType.CPU: 10_000}, [full])
    with pytest.raises(ResourceLimitExceeded):
        check_within_limits({ResourceType.VOLUME: 1}, [full])


def test_neither_the_root_domain_nor_a_root_admin_account_is_limited(memory_cloud: Cloud) -> None:
    admin = open_account(memory_cloud, uuid.uuid4(), "boss", "Admin", "k")
    with pytest.raises(InvalidParameter, match="ROOT domain has no limits"):
        set_resource_limit(memory_cloud, ROOT_DOMAIN_ID, "cpu", 1)
    with pytest.raises(InvalidParameter, match="root admin"):
        set_resource_limit(memory_cloud, admin.id, "cpu", 1)
