"""The tenants `stratus up` starts with: the root admin, and a demo user beside it.

Both get a key pair kept in the state folder (0600), shown on the first start only: the API
key for `/v1` and the CLI, the secret key for signing CloudStack requests. The secrets are kept
encrypted in the credential store under a key of its own, also in the state folder unless
`STRATUS_CREDENTIALS_KEY` gives it (production keeps it in its secret store).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from api.credentials import CredentialStore, KeyPair, new_encryption_key
from domain.account import AccountType
from domain.cloud import Cloud
from domain.domain_tree import ROOT_DOMAIN_ID
from domain.ids import named_id
from domain.inventory import add_account
from domain.tenancy import create_domain, first_user_id, open_account
from workers.settings import Settings

ADMIN_NAME = "admin"
DEMO_NAME = "demo"


@dataclass(frozen=True)
class Tenant:
    account_id: UUID
    name: str
    keys: KeyPair


def kept_secret(
    settings: Settings, file_name: str, configured: str | None, make: Callable[[], str]
) -> str:
    """The configured value, or the one made for this state folder (kept there, 0600)."""
    if configured:
        return configured
    path = settings.state_dir / file_name
    if path.exists():
        return path.read_text().strip()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    value = make()
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return value


def new_secret() -> str:
    return secrets.token_urlsafe(64)


def credentials_key(settings: Settings) -> str:
    return kept_secret(settings, "credentials-key", settings.credentials_key, new_encryption_key)


def admin_pair(settings: Settings) -> KeyPair:
    return KeyPair(
        kept_secret(settings, "admin-api-key", settings.admin_api_key, new_secret),
        kept_secret(settings, "admin-secret-key", settings.admin_secret_key, new_secret),
    )


def ensure_admin(cloud: Cloud, store: CredentialStore, pair: KeyPair) -> Tenant:
    admin_id = named_id("account", ADMIN_NAME)
    add_account(cloud, admin_id, ADMIN_NAME, AccountType.ADMIN.value, pair.api_key)
    store.keep(first_user_id(admin_id), pair)
    return Tenant(admin_id, ADMIN_NAME, pair)


def ensure_demo_user(settings: Settings, cloud: Cloud, store: CredentialStore) -> Tenant:
    """The demo domain ("ROOT/demo") and its user account, for a newcomer to try both keys."""
    pair = KeyPair(
        kept_secret(settings, "demo-api-key", None, new_secret),
        kept_secret(settings, "demo-secret-key", None, new_secret),
    )
    domain = create_domain(cloud, named_id("domain", DEMO_NAME), DEMO_NAME, ROOT_DOMAIN_ID)
    account_id = named_id("account", f"{DEMO_NAME}/{DEMO_NAME}")
    store.keep(first_user_id(account_id), pair)
    open_account(
        cloud, account_id, DEMO_NAME, AccountType.USER.value, pair.digest, domain_id=domain.id
    )
    return Tenant(account_id, DEMO_NAME, pair)
