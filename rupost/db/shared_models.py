"""Models of shared mailboxes and of the rights to send as (or on behalf of) a mailbox.

All in ``rupost_data`` (DataBase): dovecot reads the members through the
``lookup_shared_boxes`` view (its acl_shared_dict), postfix the send rights through
``lookup_senders`` (smtpd_sender_login_maps), the policy server through
``lookup_sender_grants`` (data migration 0011_data_shared_mailboxes).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .models import DataBase

Timestamp = DateTime(timezone=True)


class SharedMailbox(DataBase):
    __tablename__ = "shared_mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), ForeignKey("mailboxes.address", ondelete="CASCADE",
                                                                 onupdate="CASCADE"), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class SharedMailboxMember(DataBase):
    __tablename__ = "shared_mailbox_members"

    shared_id: Mapped[int] = mapped_column(ForeignKey("shared_mailboxes.id", ondelete="CASCADE"), primary_key=True)
    member: Mapped[str] = mapped_column(String(320), ForeignKey("mailboxes.address", ondelete="CASCADE",
                                                                onupdate="CASCADE"), primary_key=True)
    rights: Mapped[str] = mapped_column(String(32))  # IMAP ACL letters (RFC 4314), e.g. "lrwsipk"


class SenderRight(DataBase):
    __tablename__ = "sender_rights"

    mailbox: Mapped[str] = mapped_column(String(320), ForeignKey("mailboxes.address", ondelete="CASCADE",
                                                                 onupdate="CASCADE"), primary_key=True)
    grantee: Mapped[str] = mapped_column(String(320), primary_key=True)  # a mailbox or a distribution list
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # send_as | send_on_behalf
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class SharedMailboxGroup(DataBase):
    """A distribution list (LDAP groups included) granted rights on a shared mailbox: its
    current members hold them (dovecot's acl_groups, data migration 0012)."""
    __tablename__ = "shared_mailbox_groups"

    shared_id: Mapped[int] = mapped_column(ForeignKey("shared_mailboxes.id", ondelete="CASCADE"), primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("distribution_lists.id", ondelete="CASCADE"), primary_key=True,
                                         index=True)
    rights: Mapped[str] = mapped_column(String(32))  # IMAP ACL letters, as for a member


class CalendarGroupDelegation(DataBase):
    """An owner's calendar delegated to a distribution list: expanded into one SOGo ACL per
    member (SOGo takes groups only from LDAP sources), kept in step with the list."""
    __tablename__ = "calendar_group_delegations"

    owner: Mapped[str] = mapped_column(String(320), ForeignKey("mailboxes.address", ondelete="CASCADE",
                                                               onupdate="CASCADE"), primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("distribution_lists.id", ondelete="CASCADE"), primary_key=True,
                                         index=True)
    rights: Mapped[str] = mapped_column(String(16))  # read | write | freebusy
    members: Mapped[list] = mapped_column(JSONB, default=list)  # whom the expansion granted
