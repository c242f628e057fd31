"""Marshmallow schemas of the API: they validate what comes in (422 with the field's
message) and shape what goes out, and the OpenAPI description is generated from them."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from .common import page_schema

ADDRESS = {"description": "An e-mail address (local@domain).", "example": "ivan.petrov@example.ru"}
QUOTA = {"description": "Bytes, or a size like 500M, 2G; 0 is unlimited.", "example": "2G"}


class ProblemSchema(Schema):
    """RFC 9457 problem details."""
    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    instance = fields.String()
    errors = fields.Dict()


# ---------------------------------------------------------------------------- domains
class DomainSchema(Schema):
    name = fields.String(required=True)
    description = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    mailboxes = fields.Integer(allow_none=True, required=True)
    aliases = fields.Integer(allow_none=True, required=True)


class DomainCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 253), metadata={"example": "example.ru"})
    description = fields.String(load_default="", validate=validate.Length(0, 1000))


class DomainPatchSchema(Schema):
    enabled = fields.Boolean(required=True)


class DomainListArgs(Schema):
    search = fields.String(validate=validate.Length(0, 253), metadata={"description": "Part of the name."})


DomainPage = page_schema(DomainSchema, "DomainPage")


# ---------------------------------------------------------------------------- mailboxes
class MailboxSchema(Schema):
    address = fields.String(required=True, metadata=ADDRESS)
    display_name = fields.String(required=True)
    quota_bytes = fields.Integer(required=True)
    enabled = fields.Boolean(required=True)


class MailboxCreateSchema(Schema):
    address = fields.String(required=True, validate=validate.Length(1, 320), metadata=ADDRESS)
    password = fields.String(required=True, validate=validate.Length(1, 1024), load_only=True)
    quota = fields.String(load_default="0", validate=validate.Length(1, 32), metadata=QUOTA)
    display_name = fields.String(load_default="", validate=validate.Length(0, 256))


class MailboxPatchSchema(Schema):
    password = fields.String(validate=validate.Length(1, 1024), load_only=True)
    quota = fields.String(validate=validate.Length(1, 32), metadata=QUOTA)
    enabled = fields.Boolean()


class MailboxListArgs(Schema):
    domain = fields.List(fields.String(validate=validate.Length(1, 253)),
                         metadata={"description": "Only these domains (repeat the parameter)."})
    search = fields.String(validate=validate.Length(0, 320), metadata={"description": "Part of the address or name."})
    sort = fields.String(load_default="address", validate=validate.OneOf(["address", "name", "quota", "enabled",
                                                                          "created"]))
    descending = fields.Boolean(load_default=False)


class MailboxImportSchema(Schema):
    csv = fields.String(required=True, validate=validate.Length(1, 64 * 1024 * 1024), metadata={
        "description": "CSV text: a header line naming the columns address,password[,quota][,name], then one "
                       "mailbox a line. All rows are checked first; any bad row imports nothing."})
    check_only = fields.Boolean(load_default=False)


MailboxPage = page_schema(MailboxSchema, "MailboxPage")


# ---------------------------------------------------------------------------- aliases
class AliasSchema(Schema):
    address = fields.String(required=True, metadata=ADDRESS)
    destinations = fields.List(fields.String(), required=True)
    enabled = fields.Boolean(required=True)


class AliasCreateSchema(Schema):
    address = fields.String(required=True, validate=validate.Length(1, 320), metadata=ADDRESS)
    destinations = fields.List(fields.String(validate=validate.Length(1, 320)), required=True,
                               validate=validate.Length(1, 1000))


class AliasListArgs(Schema):
    domain = fields.List(fields.String(validate=validate.Length(1, 253)))
    search = fields.String(validate=validate.Length(0, 320), metadata={"description": "Part of the address or "
                                                                                       "of a destination."})


AliasPage = page_schema(AliasSchema, "AliasPage")


# ---------------------------------------------------------------------------- distribution lists
POLICY = validate.OneOf(["anyone", "internal", "members"])


class ListMemberSchema(Schema):
    address = fields.String(required=True)
    source = fields.String(required=True, metadata={"description": "static, or filter (from the LDAP filter)."})


class DistributionListSchema(Schema):
    address = fields.String(required=True, metadata=ADDRESS)
    display_name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["static", "dynamic"]))
    filter = fields.String(required=True, allow_none=True)
    sender_policy = fields.String(required=True)
    max_drop_share = fields.Float(required=True, allow_none=True)
    enabled = fields.Boolean(required=True)
    last_update_at = fields.String(required=True, allow_none=True)
    last_update_status = fields.String(required=True, allow_none=True)
    member_count = fields.Integer()
    members = fields.List(fields.Nested(ListMemberSchema))


class DistributionListCreateSchema(Schema):
    address = fields.String(required=True, validate=validate.Length(1, 320), metadata=ADDRESS)
    members = fields.List(fields.String(validate=validate.Length(1, 320)), load_default=list,
                          validate=validate.Length(0, 5000))
    filter = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 128),
                           metadata={"description": "The name of an LDAP filter: a dynamic list."})
    sender_policy = fields.String(load_default="anyone", validate=POLICY)
    display_name = fields.String(load_default="", validate=validate.Length(0, 256))


class DistributionListPatchSchema(Schema):
    sender_policy = fields.String(validate=POLICY)
    enabled = fields.Boolean()
    max_drop_share = fields.Float(validate=validate.Range(0, 1))


class MembersSchema(Schema):
    members = fields.List(fields.String(validate=validate.Length(1, 320)), required=True,
                          validate=validate.Length(1, 5000))


class MembersChangedSchema(Schema):
    changed = fields.Integer(required=True)


class DistributionListArgs(Schema):
    domain = fields.String(validate=validate.Length(1, 253))


DistributionListPage = page_schema(DistributionListSchema, "DistributionListPage")


# ---------------------------------------------------------------------------- jobs, audit
class JobSchema(Schema):
    id = fields.Integer(required=True)
    kind = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["queued", "running", "done", "failed"]))
    progress = fields.Integer(required=True)
    message = fields.String(required=True)
    result = fields.Dict(required=True)
    error = fields.String(required=True)
    requested_by = fields.String(required=True)
    node = fields.String(required=True)
    created_at = fields.String(required=True, allow_none=True)
    started_at = fields.String(required=True, allow_none=True)
    finished_at = fields.String(required=True, allow_none=True)


JobPage = page_schema(JobSchema, "JobPage")


class AuditRecordSchema(Schema):
    id = fields.Integer(required=True)
    at = fields.String(required=True)
    actor = fields.String(required=True)
    source = fields.String(required=True)
    action = fields.String(required=True)
    target = fields.String(required=True)
    details = fields.Dict(required=True)


class AuditArgs(Schema):
    actor = fields.String(validate=validate.Length(1, 128))
    source = fields.String(validate=validate.Length(1, 32))
    action = fields.String(validate=validate.Length(1, 128), metadata={"description": "Prefix of the action."})
    target = fields.String(validate=validate.Length(1, 255), metadata={"description": "Part of the target."})
    since = fields.AwareDateTime(default_timezone=None)
    until = fields.AwareDateTime(default_timezone=None)


AuditPage = page_schema(AuditRecordSchema, "AuditPage")


# ---------------------------------------------------------------------------- node-wide operations
class NodeSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    fqdn = fields.String(required=True, allow_none=True)
    address = fields.String(required=True, allow_none=True)
    state = fields.String(required=True, allow_none=True)
    admin_state = fields.String(required=True, allow_none=True)
    queue_directory = fields.String(required=True, allow_none=True)
    applied_generation = fields.Integer(required=True, allow_none=True)
    components = fields.Dict(required=True, allow_none=True)
    software_version = fields.String(required=True, allow_none=True)
    last_heartbeat = fields.String(required=True, allow_none=True)


NodePage = page_schema(NodeSchema, "NodePage")


class TemplateSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    kind = fields.String(required=True)
    active = fields.Boolean(required=True)
    extends = fields.String(required=True, allow_none=True)
    description = fields.String(required=True, allow_none=True)
    sha256 = fields.String(required=True, allow_none=True)


TemplatePage = page_schema(TemplateSchema, "TemplatePage")


class GenerationSchema(Schema):
    generation = fields.Integer(required=True)
    template = fields.String(required=True)
    result = fields.String(required=True)
    error = fields.String(required=True, allow_none=True)
    started_by = fields.String(required=True, allow_none=True)
    started_at = fields.String(required=True)
    finished_at = fields.String(required=True, allow_none=True)


GenerationPage = page_schema(GenerationSchema, "GenerationPage")


class DeploySchema(Schema):
    force = fields.Boolean(load_default=False, metadata={"description": "Overwrite files changed by hand."})


class RollbackSchema(Schema):
    generation = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 2**31 - 1),
                                metadata={"description": "The generation to return to; none: the previous one."})
    force = fields.Boolean(load_default=False)


class CertificateSchema(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    active = fields.Boolean(required=True)
    builtin = fields.Boolean(required=True)
    not_after = fields.String(required=True)
    days_left = fields.Integer(required=True)
    added_by = fields.String(required=True, allow_none=True)


CertificatePage = page_schema(CertificateSchema, "CertificatePage")


class BlockSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(["ip", "account"]))
    value = fields.String(required=True)
    reason = fields.String(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    expires_at = fields.DateTime(required=True)
    active = fields.Boolean(required=True)


BlockPage = page_schema(BlockSchema, "BlockPage")


class BlockArgs(Schema):
    include_expired = fields.Boolean(load_default=False)


class UnblockedSchema(Schema):
    kind = fields.String(required=True)
    value = fields.String(required=True)
    was_active = fields.Boolean(required=True)
    failures_forgotten = fields.Integer(required=True)


class ResourceSchema(Schema):
    address = fields.String(required=True, metadata=ADDRESS)
    kind = fields.String(required=True)
    display_name = fields.String(required=True)
    multiple_bookings = fields.Integer(required=True)
    owner = fields.String(required=True, allow_none=True)
    description = fields.String(required=True, allow_none=True)
    enabled = fields.Boolean(required=True)


ResourcePage = page_schema(ResourceSchema, "ResourcePage")


class ThresholdSchema(Schema):
    value = fields.Integer(required=True)
    default = fields.Integer(required=True)
    set = fields.Boolean(required=True)


class ThresholdsPatchSchema(Schema):
    values = fields.Dict(keys=fields.String(validate=validate.Length(1, 64)),
                         values=fields.Integer(validate=validate.Range(0, 2**62)), load_default=dict)
    unset = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=list)


class ThresholdsSchema(Schema):
    thresholds = fields.Dict(keys=fields.String(), values=fields.Nested(ThresholdSchema), required=True)


# ---------------------------------------------------------------------------- LDAP filters, monitoring
class LdapFilterSchema(Schema):
    name = fields.String(required=True)
    ldap_domain = fields.String(required=True)
    filter = fields.String(required=True)
    description = fields.String(required=True)


LdapFilterPage = page_schema(LdapFilterSchema, "LdapFilterPage")


class LdapFilterCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 64))
    ldap_domain = fields.String(required=True, validate=validate.Length(1, 128))
    filter = fields.String(required=True, validate=validate.Length(1, 4096),
                           metadata={"example": "(&(objectClass=user)(department=Sales))"})
    description = fields.String(load_default="", validate=validate.Length(0, 1000))


class LdapFilterPatchSchema(Schema):
    filter = fields.String(required=True, validate=validate.Length(1, 4096))


class TemplateDocumentSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    kind = fields.String(required=True)
    active = fields.Boolean(required=True)
    body = fields.String(required=True)


class TemplateArgs(Schema):
    version = fields.String(validate=validate.Length(1, 64))


class ParameterSchema(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    value = fields.Raw(required=True, allow_none=True)
    default = fields.Raw(required=True, allow_none=True)
    set = fields.Boolean(required=True)
    description = fields.String(required=True)


ParameterPage = page_schema(ParameterSchema, "ParameterPage")


class DkimPreviousSchema(Schema):
    selector = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    record = fields.String(required=True)
    txt = fields.String(required=True)


class DkimSchema(Schema):
    domain = fields.String(required=True)
    selector = fields.String(required=True)
    bits = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    record = fields.String(required=True)
    txt = fields.String(required=True)
    previous = fields.List(fields.Nested(DkimPreviousSchema), required=True)


class DnsRecordSchema(Schema):
    type = fields.String(required=True)
    name = fields.String(required=True)
    value = fields.String(required=True)
    purpose = fields.String(required=True)


class DnsRecordsSchema(Schema):
    domain = fields.String(required=True)
    mail_host = fields.String(required=True)
    client_host = fields.String(required=True)
    records = fields.List(fields.Nested(DnsRecordSchema), required=True)
    notes = fields.List(fields.String(), required=True)


class StatsArgs(Schema):
    hours = fields.Integer(load_default=24, validate=validate.Range(1, 24 * 31))
    domain = fields.String(validate=validate.Length(1, 253))
    node = fields.String(validate=validate.Length(1, 128))


class StatsSchema(Schema):
    hours = fields.List(fields.String(), required=True)
    series = fields.Dict(keys=fields.String(), values=fields.List(fields.Integer()), required=True)
    totals = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    domain = fields.String(required=True, allow_none=True)
    node = fields.String(required=True, allow_none=True)
    from_ = fields.String(required=True, data_key="from", attribute="from")
    to = fields.String(required=True)


class QueueArgs(Schema):
    node = fields.String(validate=validate.Length(1, 128))
    cluster = fields.Boolean(load_default=False)
    match = fields.List(fields.String(validate=validate.Length(1, 1000)), validate=validate.Length(0, 20),
                        metadata={"description": "Filters as `rupost mailqueues list --match` takes them."})
    limit = fields.Integer(load_default=1000, validate=validate.Range(1, 10_000))


class QueueListSchema(Schema):
    messages = fields.List(fields.Dict(), required=True)
    nodes = fields.List(fields.Dict(), required=True)


class QueueShowArgs(Schema):
    node = fields.String(validate=validate.Length(1, 128))
    headers_only = fields.Boolean(load_default=False)


class QueuedMessageSchema(Schema):
    message = fields.Dict(required=True, metadata={"description": "The entry as the list gives it."})
    content = fields.String(required=True, metadata={"description": "As postcat prints it (cut when long)."})
    truncated = fields.Boolean(required=True)


class QueueActionSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(["hold", "release", "delete", "requeue"]))
    ids = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=list,
                      validate=validate.Length(0, 1000), metadata={"description": "Queue ids; or `match`."})
    match = fields.List(fields.String(validate=validate.Length(1, 1000)), load_default=list,
                        validate=validate.Length(0, 20), metadata={
                            "description": "Filters as `rupost mailqueues --all-matching` takes them; or `ids`."})
    node = fields.String(validate=validate.Length(1, 128))


class QueueActionResultSchema(Schema):
    node = fields.String(required=True)
    action = fields.String(required=True)
    selection = fields.String(required=True)
    matched = fields.Integer(required=True)
    done = fields.List(fields.String(), required=True)
    count = fields.Integer(required=True)
    skipped = fields.List(fields.String(), required=True)
    not_found = fields.List(fields.String(), required=True)
