"""Schemas of what an organisation leaving Exchange uses (issue 29): shared mailboxes and
their members, send-as / send-on-behalf rights, delegated calendars, groupware migrations."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..services.calendar_delegation import ROLES as CALENDAR_RIGHTS
from ..services.shared_mailboxes import RIGHTS as SHARED_RIGHTS
from .common import page_schema
from .schemas import ADDRESS, QUOTA

DOMAIN_ARG = {"description": "Only this domain's."}


# ---------------------------------------------------------------------------- shared mailboxes
class SharedMemberSchema(Schema):
    address = fields.String(required=True, metadata={"description": "A mailbox, or a distribution list (group) "
                                                                    "whose current members hold the rights."})
    rights = fields.List(fields.String(validate=validate.OneOf(list(SHARED_RIGHTS))), required=True)
    acl = fields.String(required=True, metadata={"description": "The same rights as IMAP ACL letters (RFC 4314)."})
    group = fields.Boolean(required=True)


class SharedMailboxSchema(Schema):
    address = fields.String(required=True, metadata=ADDRESS)
    display_name = fields.String(required=True)
    quota_bytes = fields.Integer(required=True)
    description = fields.String(required=True)
    members = fields.List(fields.Nested(SharedMemberSchema), required=True)


class SharedMailboxCreateSchema(Schema):
    address = fields.String(required=True, validate=validate.Length(1, 320), metadata=ADDRESS)
    display_name = fields.String(load_default="", validate=validate.Length(0, 256))
    quota = fields.String(load_default="0", validate=validate.Length(1, 32), metadata=QUOTA)
    description = fields.String(load_default="", validate=validate.Length(0, 2000))


class SharedMailboxPatchSchema(Schema):
    quota = fields.String(validate=validate.Length(1, 32), metadata=QUOTA)


class SharedMemberRightsSchema(Schema):
    rights = fields.List(fields.String(validate=validate.OneOf(list(SHARED_RIGHTS))), required=True,
                         validate=validate.Length(1, len(SHARED_RIGHTS)))


class DomainArgs(Schema):
    domain = fields.String(validate=validate.Length(1, 253), metadata=DOMAIN_ARG)


SharedMailboxPage = page_schema(SharedMailboxSchema, "SharedMailboxPage")


# ---------------------------------------------------------------------------- send rights
RIGHT_NAMES = ["send-as", "send-on-behalf"]


class SenderRightSchema(Schema):
    mailbox = fields.String(required=True, metadata=ADDRESS)
    grantee = fields.String(required=True, metadata={"description": "A mailbox, or a distribution list (group)."})
    right = fields.String(required=True, validate=validate.OneOf(RIGHT_NAMES))
    group = fields.Boolean(required=True)


class SenderRightCreateSchema(Schema):
    mailbox = fields.String(required=True, validate=validate.Length(1, 320), metadata=ADDRESS)
    grantee = fields.String(required=True, validate=validate.Length(1, 320), metadata=ADDRESS)
    right = fields.String(required=True, validate=validate.OneOf(RIGHT_NAMES))


class SenderRightArgs(Schema):
    mailbox = fields.String(validate=validate.Length(1, 320), metadata=ADDRESS)
    right = fields.String(validate=validate.OneOf(RIGHT_NAMES))


SenderRightPage = page_schema(SenderRightSchema, "SenderRightPage")


# ---------------------------------------------------------------------------- calendars
class CalendarDelegationSchema(Schema):
    owner = fields.String(required=True, metadata=ADDRESS)
    delegate = fields.String(required=True, metadata=ADDRESS)
    rights = fields.String(required=True, metadata={"description": f"One of {', '.join(CALENDAR_RIGHTS)} "
                                                                   "(or custom: the SOGo roles)."})
    group = fields.Boolean(metadata={"description": "The delegate is a distribution list (group), expanded "
                                                   "into one SOGo ACL per member."})
    members = fields.List(fields.String(), metadata={"description": "A group's members holding the rights now."})


class CalendarRightsSchema(Schema):
    rights = fields.String(required=True, validate=validate.OneOf(list(CALENDAR_RIGHTS)))


class CalendarDelegationArgs(Schema):
    owner = fields.String(validate=validate.Length(1, 320), metadata=ADDRESS)


CalendarDelegationPage = page_schema(CalendarDelegationSchema, "CalendarDelegationPage")


# ---------------------------------------------------------------------------- groupware migrations
class GroupwareMigrationSchema(Schema):
    id = fields.Integer(required=True)
    source = fields.String(required=True)
    source_login = fields.String(required=True)
    target = fields.String(required=True, metadata=ADDRESS)
    status = fields.String(required=True)
    runs = fields.Integer(required=True)
    counts = fields.Dict(required=True)
    refused = fields.List(fields.Dict(), required=True)
    error = fields.String(required=True)
    started_at = fields.String(required=True, allow_none=True)
    finished_at = fields.String(required=True, allow_none=True)


class GroupwareUserSchema(Schema):
    source_login = fields.String(required=True, validate=validate.Length(1, 320))
    source_password = fields.String(required=True, validate=validate.Length(1, 1024), load_only=True)
    target = fields.String(required=True, validate=validate.Length(1, 320), metadata=ADDRESS)


class GroupwareMigrationStartSchema(Schema):
    source = fields.String(required=True, validate=validate.Length(8, 2000), metadata={
        "description": "The CalDAV/CardDAV server: https://HOST[:PORT][/PATH] (discovery).",
        "example": "https://dav.example.ru/"})
    sogo_admin = fields.String(required=True, validate=validate.Length(1, 320), metadata={
        "description": "A SOGo super user (template parameter sogo_super_users)."})
    sogo_password = fields.String(required=True, validate=validate.Length(1, 1024), load_only=True)
    users = fields.List(fields.Nested(GroupwareUserSchema), required=True, validate=validate.Length(1, 10000))
    insecure = fields.Boolean(load_default=False, metadata={"description": "Do not verify the source's certificate."})
    resume = fields.Boolean(load_default=False, metadata={"description": "Skip users done in an earlier run."})
    workers = fields.Integer(load_default=4, validate=validate.Range(1, 16))


class GroupwareMigrationArgs(Schema):
    target = fields.String(validate=validate.Length(1, 320), metadata=ADDRESS)


GroupwareMigrationPage = page_schema(GroupwareMigrationSchema, "GroupwareMigrationPage")
