"""Marshmallow schemas of the API's administration resources: LDAP domains, checks, template
import and activation, certificate upload, DKIM keys, backups, sizing (schemas.py holds the
rest)."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..ldap.client import KINDS, SECURITY
from .common import page_schema

NAME = validate.Length(1, 128)
DN = validate.Length(1, 1024)
FILTER = validate.Length(0, 4096)
PEM = validate.Length(1, 256 * 1024)


# ---------------------------------------------------------------------------- LDAP domains
class LdapDomainSchema(Schema):
    name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    uris = fields.List(fields.String(), required=True)
    security = fields.String(required=True, validate=validate.OneOf(SECURITY))
    ca = fields.String(required=True, metadata={"description": "custom (a CA of its own) or system."})
    bind_dn = fields.String(required=True)
    base_dn = fields.String(required=True)
    user_filter = fields.String(required=True)
    group_filter = fields.String(required=True)
    mail_domains = fields.List(fields.String(), required=True)
    timeout = fields.Integer(required=True)
    enabled = fields.Boolean(required=True)
    last_sync_at = fields.String(required=True, allow_none=True)
    last_sync = fields.Dict(required=True)
    writeback = fields.Dict(required=True)
    accounts = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "Materialised accounts by state (one LDAP domain only)."})


LdapDomainPage = page_schema(LdapDomainSchema, "LdapDomainPage")


class LdapDomainCreateSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    uris = fields.List(fields.String(validate=validate.Length(1, 512)), required=True, validate=validate.Length(1, 20),
                       metadata={"description": "Server URIs, e.g. ldaps://dc1.corp.example."})
    base_dn = fields.String(required=True, validate=DN)
    bind_dn = fields.String(required=True, validate=DN)
    bind_password = fields.String(required=True, validate=validate.Length(1, 1024), load_only=True)
    security = fields.String(load_default="ldaps", validate=validate.OneOf(SECURITY))
    ca_pem = fields.String(load_default="", validate=validate.Length(0, 256 * 1024))
    mail_domains = fields.List(fields.String(validate=validate.Length(1, 253)), load_default=list)
    user_filter = fields.String(load_default="", validate=FILTER)
    group_filter = fields.String(load_default="", validate=FILTER)
    timeout = fields.Integer(load_default=10, validate=validate.Range(1, 300))
    allow_plain = fields.Boolean(load_default=False, metadata={"description": "Allow security plain."})
    check = fields.Boolean(load_default=True, metadata={"description": "Bind and search once before adding."})


class LdapDomainPatchSchema(Schema):
    uris = fields.List(fields.String(validate=validate.Length(1, 512)), validate=validate.Length(1, 20))
    base_dn = fields.String(validate=DN)
    bind_dn = fields.String(validate=DN)
    bind_password = fields.String(validate=validate.Length(1, 1024), load_only=True)
    security = fields.String(validate=validate.OneOf(SECURITY))
    ca_pem = fields.String(validate=validate.Length(0, 256 * 1024))
    mail_domains = fields.List(fields.String(validate=validate.Length(1, 253)))
    user_filter = fields.String(validate=FILTER)
    group_filter = fields.String(validate=FILTER)
    timeout = fields.Integer(validate=validate.Range(1, 300))
    enabled = fields.Boolean()
    allow_plain = fields.Boolean()


class LdapDomainRemoveArgs(Schema):
    force = fields.Boolean(load_default=False, metadata={
        "description": "Remove it even with materialised accounts (their mailboxes are disabled)."})


class LdapDomainRemovedSchema(Schema):
    name = fields.String(required=True)
    disabled_mailboxes = fields.Integer(required=True)


class LdapTestArgs(Schema):
    sample = fields.Integer(load_default=5, validate=validate.Range(1, 100))


class LdapTestSchema(Schema):
    name = fields.String(required=True)
    ok = fields.Boolean(required=True)
    error = fields.String(required=True)
    servers = fields.List(fields.Dict(), required=True)
    bind = fields.Boolean(required=True)
    base_dn = fields.Boolean(required=True)
    users = fields.List(fields.Dict(), required=True)
    user_count_sample = fields.Integer(required=True)
    server_used = fields.String()
    warning = fields.String()


class LdapSyncSchema(Schema):
    force = fields.Boolean(load_default=False, metadata={
        "description": "Apply even when more accounts would go than the allowed share."})
    dry_run = fields.Boolean(load_default=False)


# ---------------------------------------------------------------------------- checks
class CheckStateSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "warning", "critical"]))
    since = fields.String(required=True)


class CheckStatesSchema(Schema):
    states = fields.Dict(keys=fields.String(), values=fields.Nested(CheckStateSchema), required=True,
                         metadata={"description": "The last recorded state of each check:target."})


class CheckRunSchema(Schema):
    checks = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=None, allow_none=True,
                       validate=validate.Length(1, 50), metadata={"description": "Only these checks."})
    record = fields.Boolean(load_default=True, metadata={
        "description": "Record the changes of state (the monitor log and events), as `rupost check` does."})


# ---------------------------------------------------------------------------- templates
class TemplateTextSchema(Schema):
    text = fields.String(required=True, validate=validate.Length(1, 1024 * 1024),
                         metadata={"description": "The template's YAML."})


class TemplateValidatedSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    extends = fields.String(required=True, allow_none=True)
    raw_snippets = fields.List(fields.String(), required=True)


class TemplateVersionArgs(Schema):
    version = fields.String(validate=validate.Length(1, 64))


class TemplateActivatedSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    active = fields.Boolean(required=True)


class ParametersPatchSchema(Schema):
    values = fields.Dict(keys=fields.String(validate=validate.Length(1, 128)), load_default=dict)
    unset = fields.List(fields.String(validate=validate.Length(1, 128)), load_default=list)


class ParametersSchema(Schema):
    values = fields.Dict(keys=fields.String(), required=True, metadata={"description": "The values set."})


# ---------------------------------------------------------------------------- certificates
class CertificateUploadSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 64))
    type = fields.String(required=True, validate=validate.OneOf(["mail", "control_panel"]))
    certificate = fields.String(required=True, validate=PEM, metadata={
        "description": "PEM: the certificate, then its chain."})
    key = fields.String(required=True, validate=PEM, load_only=True, metadata={"description": "PEM private key."})
    activate = fields.Boolean(load_default=False)


class CertificateAddedSchema(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    active = fields.Boolean(required=True)
    subject = fields.String(required=True)
    names = fields.List(fields.String(), required=True)
    key_type = fields.String(required=True)
    not_after = fields.String(required=True)
    chain = fields.List(fields.Raw(), required=True)
    warnings = fields.List(fields.String(), required=True)
    used_by = fields.String(required=True)


class CertificateDetailSchema(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    active = fields.Boolean(required=True)
    builtin = fields.Boolean(required=True)
    not_after = fields.String(required=True)
    days_left = fields.Integer(required=True)
    added_by = fields.String(required=True, allow_none=True)
    subject = fields.String(required=True)
    issuer = fields.String(required=True)
    names = fields.List(fields.String(), required=True)
    key_type = fields.String(required=True)
    not_before = fields.String(required=True)
    serial = fields.String(required=True)
    sha256 = fields.String(required=True)
    chain = fields.List(fields.Raw(), required=True)
    missing_names = fields.List(fields.String(), required=True)
    used_by = fields.String(required=True)
    created_at = fields.String(required=True, allow_none=True)


class CertificateActivatedSchema(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    used_by = fields.String(required=True)


# ---------------------------------------------------------------------------- DKIM
class DkimGenerateSchema(Schema):
    selector = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 63))
    bits = fields.Integer(load_default=2048, validate=validate.OneOf([1024, 2048, 3072, 4096]))


class DkimRotateSchema(Schema):
    selector = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 63))
    bits = fields.Integer(load_default=None, allow_none=True, validate=validate.OneOf([1024, 2048, 3072, 4096]),
                          metadata={"description": "None: the size of the current key."})


# ---------------------------------------------------------------------------- sizing
class SizingArgs(Schema):
    mailboxes = fields.Integer(required=True, validate=validate.Range(1, 10_000_000))
    sessions_per_user = fields.Float(load_default=1.0, validate=validate.Range(0.01, 20))



class SizingSchema(Schema):
    mailboxes = fields.Integer(required=True)
    sessions_per_user = fields.Float(required=True)
    ldap_domains = fields.Integer(required=True)
    parameters = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                             metadata={"description": "The load parameters to set (rupost sizing --apply)."})
    current = fields.Dict(keys=fields.String(), required=True)
    limits = fields.Dict(keys=fields.String(), required=True)
    memory = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    session_memory_kib = fields.Integer(required=True)
    imap_sessions_per_process = fields.Integer(required=True)
    imap_hibernate_after = fields.Integer(required=True)


# ---------------------------------------------------------------------------- backups
class BackupSchema(Schema):
    name = fields.String(required=True)
    path = fields.String(required=True)
    created_at = fields.String(required=True, allow_none=True)
    node = fields.String(required=True, allow_none=True)
    with_mail = fields.Boolean(required=True)
    size = fields.Integer(required=True, metadata={"description": "Bytes of its files."})
    complete = fields.Boolean(required=True, metadata={"description": "It has a readable manifest."})


BackupPage = page_schema(BackupSchema, "BackupPage")


class BackupCreateSchema(Schema):
    with_mail = fields.Boolean(load_default=False, metadata={"description": "Archive the mail storage too."})
