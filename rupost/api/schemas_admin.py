"""Marshmallow schemas of the API's administration resources: LDAP domains, checks, template
import and activation, certificate upload, DKIM keys, backups, sizing (schemas.py holds the
rest)."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..ldap.client import GAL_FIELDS, KINDS, SECURITY
from .common import page_schema
from .schemas_directory import LdapKerberosSchema

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
    kerberos = fields.Nested(LdapKerberosSchema, required=True)
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


class LdapWritebackSetSchema(Schema):
    enabled = fields.Boolean(load_default=True, metadata={"description": "False turns write-back off."})
    pattern = fields.String(load_default="{login}", validate=validate.Length(1, 128), metadata={
        "description": "Local part of the generated address: {login}, {given}, {surname}."})
    mail_domain = fields.String(load_default="", validate=validate.Length(0, 253), metadata={
        "description": "Domain of the generated addresses (default: the first bound one)."})
    bind_dn = fields.String(load_default="", validate=validate.Length(0, 1024), metadata={
        "description": "The write-back account (write rights on mail and proxyAddresses only)."})
    bind_password = fields.String(load_default="", validate=validate.Length(0, 1024), load_only=True)
    check = fields.Boolean(load_default=True, metadata={"description": "Test the write-back account's bind."})


class LdapWritebackSettingsSchema(Schema):
    name = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    pattern = fields.String()
    mail_domain = fields.String()
    bind_dn = fields.String()


class LdapWritebackRunSchema(Schema):
    dry_run = fields.Boolean(load_default=False, metadata={
        "description": "Only report what would be added and removed per entry, and what is skipped."})


class LdapAccountArgs(Schema):
    state = fields.String(validate=validate.Length(1, 32), metadata={"description": "active, disabled, deleted..."})


LdapAccountPage = page_schema(Schema.from_dict(
    {"directory": fields.String(required=True), "id": fields.String(required=True),
     "login": fields.String(required=True, allow_none=True), "mail": fields.String(required=True, allow_none=True),
     "state": fields.String(required=True), "reason": fields.String(required=True, allow_none=True),
     "aliases": fields.List(fields.String(), required=True), "dn": fields.String(required=True, allow_none=True),
     "written_aliases": fields.List(fields.String(), required=True, metadata={
         "description": "RuPost aliases the write-back wrote to the entry (RuPost's, not the directory's)."})},
    name="LdapAccount"), "LdapAccountPage")


class GalArgs(Schema):
    search = fields.String(load_default="", validate=validate.Length(0, 200),
                           metadata={"description": "Part of the address or the display name."})


GalPage = page_schema(Schema.from_dict(
    {"directory": fields.String(required=True), "mail": fields.String(required=True),
     **{name: fields.String(required=True, allow_none=True) for name in GAL_FIELDS}}, name="GalEntry"), "GalPage")


class DropShareSchema(Schema):
    share = fields.Float(required=True, validate=validate.Range(0, 1), metadata={"description": "0.2 is 20%."})


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


# ---------------------------------------------------------------------------- impersonation, push
class ImpersonationSchema(Schema):
    name = fields.String(required=True)
    domains = fields.List(fields.String(), required=True)
    description = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    created_at = fields.String(required=True, allow_none=True)
    uses = fields.Integer(metadata={"description": "Mailboxes opened with it (in the list)."})
    last_use = fields.String(allow_none=True)


ImpersonationPage = page_schema(ImpersonationSchema, "ImpersonationPage")


class ImpersonationCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 64))
    password = fields.String(required=True, validate=validate.Length(1, 1024), load_only=True)
    domains = fields.List(fields.String(validate=validate.Length(1, 253)), required=True,
                          validate=validate.Length(1, 1000), metadata={"description": "The mail domains it opens."})
    description = fields.String(load_default="", validate=validate.Length(0, 1000))


class ImpersonationPatchSchema(Schema):
    password = fields.String(validate=validate.Length(1, 1024), load_only=True)
    domains = fields.List(fields.String(validate=validate.Length(1, 253)), validate=validate.Length(1, 1000))
    enabled = fields.Boolean()


class ImpersonationUseSchema(Schema):
    at = fields.String(required=True)
    account = fields.String(required=True)
    target = fields.String(required=True)
    protocol = fields.String(required=True, allow_none=True)
    remote_ip = fields.String(required=True, allow_none=True)
    node = fields.String(required=True, allow_none=True)
    mechanism = fields.String(required=True, allow_none=True)


ImpersonationUsePage = page_schema(ImpersonationUseSchema, "ImpersonationUsePage")


class PushEndpointSchema(Schema):
    name = fields.String(required=True)
    url = fields.String(required=True)
    domains = fields.List(fields.String(), required=True)
    enabled = fields.Boolean(required=True)
    secret = fields.String(required=True, metadata={"description": "`set` when it has one (never the secret)."})
    created_by = fields.String(required=True, allow_none=True)
    failures_24h = fields.Integer()
    last_failure = fields.String()


PushEndpointPage = page_schema(PushEndpointSchema, "PushEndpointPage")


class PushEndpointCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 64))
    url = fields.String(required=True, validate=validate.Length(1, 2048),
                        metadata={"description": "http:// or https:// URL the events are POSTed to."})
    domains = fields.List(fields.String(validate=validate.Length(1, 253)), load_default=list,
                          metadata={"description": "Only these domains' events; none: every domain."})
    secret = fields.String(load_default="", validate=validate.Length(0, 1024), load_only=True,
                           metadata={"description": "Sent as Authorization: Bearer."})


class PushFailureSchema(Schema):
    at = fields.String(required=True)
    node = fields.String(required=True, allow_none=True)
    endpoint = fields.String(required=True)
    user = fields.String(required=True, allow_none=True)
    mailbox = fields.String(required=True, allow_none=True)
    uid = fields.Integer(required=True, allow_none=True)
    attempt = fields.Integer(required=True)
    status = fields.Integer(required=True, allow_none=True)
    final = fields.Boolean(required=True)
    error = fields.String(required=True)


PushFailurePage = page_schema(PushFailureSchema, "PushFailurePage")


class PushFailureArgs(Schema):
    endpoint = fields.String(validate=validate.Length(1, 64))


class PushTestedSchema(Schema):
    endpoint = fields.String(required=True)
    status = fields.Integer(required=True, allow_none=True)


# ---------------------------------------------------------------------------- nodes, queues
class NodePatchSchema(Schema):
    drained = fields.Boolean(required=True, metadata={
        "description": "Drained: its HA agent reports it down so clients go to the other nodes."})


class NodeRemoveArgs(Schema):
    force = fields.Boolean(load_default=False, metadata={"description": "Even while it reports heartbeats."})


class QueueFlushSchema(Schema):
    ids = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=list,
                      validate=validate.Length(0, 1000), metadata={"description": "None: every deferred message."})
    node = fields.String(validate=validate.Length(1, 128))


class QueueFlushedSchema(Schema):
    node = fields.String(required=True)
    action = fields.String(required=True)
    ids = fields.Raw(required=True, metadata={"description": "The ids flushed, or `all`."})


# ---------------------------------------------------------------------------- calendar resources
class ResourceCreateSchema(Schema):
    address = fields.String(required=True, validate=validate.Length(1, 320),
                            metadata={"description": "The resource's address (local@domain)."})
    kind = fields.String(load_default="room", validate=validate.OneOf(["room", "equipment"]))
    display_name = fields.String(load_default="", validate=validate.Length(0, 256))
    multiple_bookings = fields.Integer(load_default=1, validate=validate.Range(0, 1000), metadata={
        "description": "Simultaneous bookings: 1 none overlapping, 0 no limit."})
    owner = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 320),
                          metadata={"description": "A mailbox that manages its bookings."})
    description = fields.String(load_default="", validate=validate.Length(0, 1000))


class ResourcePatchSchema(Schema):
    multiple_bookings = fields.Integer(validate=validate.Range(0, 1000))
    owner = fields.String(validate=validate.Length(0, 320), metadata={"description": "Empty: no owner."})
    display_name = fields.String(validate=validate.Length(0, 256))


class ResourceAddedSchema(Schema):
    address = fields.String(required=True)
    kind = fields.String(required=True)
    display_name = fields.String(required=True)
    multiple_bookings = fields.Integer(required=True)
    owner = fields.String(required=True, allow_none=True)
    description = fields.String(required=True, allow_none=True)
    enabled = fields.Boolean(required=True)
    calendar = fields.String(metadata={"description": "ready, or not ready with the reason (provision it again)."})


class ResourceProvisionedSchema(Schema):
    address = fields.String(required=True)
    owner = fields.String(required=True, allow_none=True)
    calendar = fields.String(required=True)


# ---------------------------------------------------------------------------- IMAP migration
class MigrationArgs(Schema):
    source = fields.String(validate=validate.Length(1, 300), metadata={"description": "imaps://HOST[:PORT]"})


class MigrationSchema(Schema):
    source = fields.String(required=True)
    source_login = fields.String(required=True)
    target = fields.String(required=True)
    status = fields.String(required=True)
    runs = fields.Integer(required=True)
    folders = fields.Raw(required=True, allow_none=True)
    source_messages = fields.Integer(required=True, allow_none=True)
    target_messages = fields.Integer(required=True, allow_none=True)
    copied = fields.Integer(required=True, allow_none=True)
    missing = fields.Dict(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)
    finished_at = fields.String(required=True, allow_none=True)


MigrationPage = page_schema(MigrationSchema, "MigrationPage")


class MigrationRunSchema(Schema):
    source = fields.String(required=True, validate=validate.Length(1, 300), metadata={
        "description": "imaps://HOST[:PORT] (imap://HOST[:PORT]: STARTTLS)."})
    map = fields.String(required=True, validate=validate.Length(1, 16 * 1024 * 1024), load_only=True, metadata={
        "description": "CSV: source_login,source_password,target_address a line (with a master user: "
                       "source_login,target_address). Every row is checked before anything runs."})
    ca_pem = fields.String(load_default="", validate=validate.Length(0, 256 * 1024),
                           metadata={"description": "The CA of the source's certificate (PEM), if not public."})
    insecure = fields.Boolean(load_default=False, metadata={"description": "Do not verify the source's certificate."})
    master_user = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 256))
    master_password = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 1024),
                                    load_only=True)
    resume = fields.Boolean(load_default=False, metadata={"description": "Skip mailboxes an earlier run completed."})
    workers = fields.Integer(load_default=2, validate=validate.Range(1, 16))
