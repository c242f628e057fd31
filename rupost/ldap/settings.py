"""An LDAP domain's row (rupost.db.directory_models.LdapDomain) as connection settings."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .client import Settings

if TYPE_CHECKING:
    from ..db.directory_models import LdapDomain


def settings_of(row: LdapDomain) -> Settings:
    return Settings(name=row.name, kind=row.kind, uris=list(row.uris), security=row.security, ca_pem=row.ca_pem,
                    bind_dn=row.bind_dn, bind_password=row.bind_password, base_dn=row.base_dn,
                    user_filter=row.user_filter, group_filter=row.group_filter, timeout=row.timeout)
