"""Models of the directories area (LDAP domains, GAL, distribution lists).

- ``rupost`` (MainBase): configuration: LDAP domains (connection, service account,
  bound mail domains), named LDAP filters, directory-group -> administrator-role
  mappings, impersonation accounts. LDAP domains are rendered into the dovecot and
  SOGo configuration (authentication by bind), so they live with the configuration.
- ``rupost_data`` (DataBase): what the daemons read: directory accounts materialised
  into mailboxes/aliases (keyed by the directory's stable id), the GAL fields,
  distribution lists and their current members.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .models import DataBase, MainBase

Timestamp = DateTime(timezone=True)


# --------------------------------------------------------------------- rupost
class LdapDomain(MainBase):
    __tablename__ = "ldap_domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # ad | freeipa | aldpro
    uris: Mapped[list] = mapped_column(JSONB, default=list)  # tried in order (failover)
    security: Mapped[str] = mapped_column(String(16), default="ldaps")  # ldaps | starttls | plain
    ca_pem: Mapped[str] = mapped_column(Text, default="")  # empty: the system's trust store
    bind_dn: Mapped[str] = mapped_column(Text)
    bind_password: Mapped[str] = mapped_column(Text)  # the service account's, never a user's
    base_dn: Mapped[str] = mapped_column(Text)
    user_filter: Mapped[str] = mapped_column(Text, default="")  # extra condition ANDed to the profile's
    group_filter: Mapped[str] = mapped_column(Text, default="")
    mail_domains: Mapped[list] = mapped_column(JSONB, default=list)  # mail domains whose users it holds
    timeout: Mapped[int] = mapped_column(Integer, default=10)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    last_sync: Mapped[dict] = mapped_column(JSONB, default=dict)
    # write-back (guide §7.5): {enabled, pattern, mail_domain, bind_dn, bind_password}; {} = off
    writeback: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")
    # Kerberos SSO (rupost ldap-domains kerberos): {realm, host, principals, keytab (base64),
    # sha256, checked_at}; {} = off. The keytab is a secret like bind_password (docs/security.md)
    kerberos: Mapped[dict] = mapped_column(JSONB, default=dict, server_default="{}")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class LdapFilter(MainBase):
    """A named, validated LDAP filter: the membership rule of dynamic distribution lists."""

    __tablename__ = "ldap_filters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ldap_domain_id: Mapped[int] = mapped_column(ForeignKey("ldap_domains.id", ondelete="RESTRICT"), index=True)
    filter: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class LdapAdminMapping(MainBase):
    """A directory group (or one user) whose members are RuPost administrators with a role."""

    __tablename__ = "ldap_admin_mappings"
    __table_args__ = (UniqueConstraint("ldap_domain_id", "kind", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ldap_domain_id: Mapped[int] = mapped_column(ForeignKey("ldap_domains.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # group (a DN) | user (a login)
    value: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))  # superadmin | domain_admin | readonly
    domains: Mapped[list] = mapped_column(JSONB, default=list)  # for domain_admin / readonly: the mail domains
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


# ---------------------------------------------------------------- rupost_data
class DirectoryAccount(DataBase):
    """A directory user materialised into a mailbox; the stable id survives renames."""

    __tablename__ = "directory_accounts"
    __table_args__ = (UniqueConstraint("directory", "stable_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    directory: Mapped[str] = mapped_column(String(64), index=True)  # ldap_domains.name
    stable_id: Mapped[str] = mapped_column(String(128))  # objectGUID | ipaUniqueID
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"), nullable=True,
                                                   index=True)
    dn: Mapped[str] = mapped_column(Text, default="")
    login: Mapped[str] = mapped_column(String(256), default="")
    mail: Mapped[str] = mapped_column(String(320), index=True)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled | deleted | conflict
    state_reason: Mapped[str] = mapped_column(Text, default="")
    aliases: Mapped[list] = mapped_column(JSONB, default=list)  # extra addresses materialised as aliases
    # RuPost aliases the write-back wrote to the entry: RuPost's, not the directory's (the sync
    # leaves them alone; only they are removed from the entry when their alias goes)
    written_aliases: Mapped[list] = mapped_column(JSONB, default=list, server_default="[]")
    groups: Mapped[list] = mapped_column(JSONB, default=list)  # memberOf DNs
    gal: Mapped[dict] = mapped_column(JSONB, default=dict)  # GAL field -> value (guide §7.7)
    synced_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class DistributionList(DataBase):
    __tablename__ = "distribution_lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="RESTRICT"), index=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    filter_name: Mapped[str | None] = mapped_column(String(64), nullable=True)  # dynamic: ldap_filters.name
    sender_policy: Mapped[str] = mapped_column(String(16), default="anyone")  # anyone | internal | members
    max_drop_share: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: the global setting
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_update_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    last_update_status: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class DistributionListMember(DataBase):
    __tablename__ = "distribution_list_members"

    list_id: Mapped[int] = mapped_column(ForeignKey("distribution_lists.id", ondelete="CASCADE"), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    source: Mapped[str] = mapped_column(String(8), primary_key=True)  # static | filter
