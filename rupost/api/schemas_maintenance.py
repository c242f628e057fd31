"""Schemas of the node's maintenance resources (maintenance.py): DH parameters, panel lockouts,
an administrator's account, the database cluster's state, evacuation and sizing jobs, SRS
rotation, the DNS records check and a domain's certificate note."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from .schemas import DnsRecordSchema
from .schemas_reports import MailHostSchema


class DHParamSchema(Schema):
    name = fields.String(required=True)
    bits = fields.Integer(required=True)
    active = fields.Boolean(required=True)
    builtin = fields.Boolean()
    created_at = fields.String(allow_none=True)


class DHParamPage(Schema):
    items = fields.List(fields.Nested(DHParamSchema), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


class DHParamImportSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 64),
                         metadata={"description": "The set's name (a set of that name is replaced)."})
    pem = fields.String(required=True, validate=validate.Length(1, 64 * 1024),
                        metadata={"description": "`-----BEGIN DH PARAMETERS-----` (2048 bits or more)."})


class LockoutSchema(Schema):
    kind = fields.String(required=True, metadata={"description": "`address` (a client address) or `user`."})
    key = fields.String(required=True)
    locked_until = fields.String(required=True)


class LockoutPage(Schema):
    items = fields.List(fields.Nested(LockoutSchema), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)


class AdminSchema(Schema):
    login = fields.String(required=True)
    source = fields.String(required=True)
    role = fields.String(required=True)
    domains = fields.List(fields.String(), required=True)
    language = fields.String(required=True, allow_none=True)
    totp = fields.Boolean(required=True)
    enabled = fields.Boolean(required=True)
    last_login_at = fields.String(required=True, allow_none=True)


class DatabaseMemberSchema(Schema):
    name = fields.String(required=True)
    host = fields.String(required=True)
    port = fields.Integer(required=True)
    role = fields.String(required=True, metadata={"description": "Patroni's role; `unreachable` when its REST "
                                                                 "API does not answer."})
    state = fields.String(required=True)
    lag_bytes = fields.Integer(required=True, allow_none=True)
    timeline = fields.Integer(required=True, allow_none=True)


class DatabaseStatusSchema(Schema):
    ha = fields.Boolean(required=True, metadata={"description": "Whether the database is a Patroni cluster."})
    primary = fields.String(required=True, allow_none=True)
    members = fields.List(fields.Nested(DatabaseMemberSchema), required=True)
    reaches = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                          metadata={"description": "Which member each way (core, db_primary, db_lookup) leads "
                                                   "to now."})


class EvacuationSchema(Schema):
    node = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 128),
                         metadata={"description": "Only this failed node (default: every failed node with mail "
                                                  "in its queue)."})
    timeout = fields.Float(load_default=600.0, validate=validate.Range(1, 3600),
                           metadata={"description": "Seconds per node."})


class SizingApplySchema(Schema):
    mailboxes = fields.Integer(required=True, validate=validate.Range(1, 10_000_000))
    sessions_per_user = fields.Float(load_default=1.0, validate=validate.Range(0.1, 20))


class SizingAppliedSchema(Schema):
    parameters = fields.Dict(required=True, metadata={"description": "The active template's values now; a "
                                                                     "deploy applies them."})


class MailHostSetSchema(Schema):
    mail_host = fields.String(required=True, validate=validate.Length(1, 253))
    allow_unqualified = fields.Boolean(load_default=False,
                                       metadata={"description": "Accept a name that is not fully qualified."})


class DnsCheckArgs(Schema):
    nameserver = fields.String(load_default=None, validate=validate.Length(1, 64),
                               metadata={"description": "Ask this name server (IP or IP:PORT) instead of the "
                                                        "node's resolver."})
    timeout = fields.Float(load_default=5.0, validate=validate.Range(0.1, 30))


class DnsCheckedRecordSchema(DnsRecordSchema):
    status = fields.String(required=True, validate=validate.OneOf(["present", "missing", "wrong"]))
    found = fields.List(fields.String(), required=True)
    detail = fields.String(required=True)


class DnsCheckSchema(Schema):
    domain = fields.String(required=True)
    nameserver = fields.String(required=True)
    records = fields.List(fields.Nested(DnsCheckedRecordSchema), required=True)
    ok = fields.Boolean(required=True)
    summary = fields.String(required=True)


class CertificateNoteSchema(Schema):
    note = fields.String(required=True, allow_none=True,
                         metadata={"description": "What to do when the active mail certificate does not cover "
                                                  "the domain's autoconfig./autodiscover. names; null when it "
                                                  "does."})


class MailHostSetResultSchema(MailHostSchema):
    changed = fields.Boolean(required=True)
    notes = fields.List(fields.String(), required=True)
