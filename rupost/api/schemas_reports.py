"""Marshmallow schemas of the API's reports (rupost/api/reports.py)."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from .common import page_schema


class MonitorEventArgs(Schema):
    problems_only = fields.Boolean(load_default=True, metadata={"description": "Leave out routine events."})


class MonitorEventSchema(Schema):
    at = fields.String(required=True)
    node = fields.String(required=True)
    component = fields.String(required=True)
    state = fields.String(required=True)
    message = fields.String(required=True)


MonitorEventPage = page_schema(MonitorEventSchema, "MonitorEventPage")


class PeakArgs(Schema):
    hours = fields.Integer(load_default=24, validate=validate.Range(1, 24 * 31))
    node = fields.String(validate=validate.Length(1, 128))


class PeaksSchema(Schema):
    hours = fields.List(fields.String(), required=True)
    series = fields.Dict(keys=fields.String(), values=fields.List(fields.Integer()), required=True)
    peaks = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    node = fields.String(required=True, allow_none=True)
    from_ = fields.String(required=True, data_key="from", attribute="from")
    to = fields.String(required=True)


DomainTrafficPage = page_schema(Schema.from_dict(
    {"domain": fields.String(required=True), "received": fields.Integer(), "sent": fields.Integer(),
     "delivered": fields.Integer(), "deferred": fields.Integer(), "bounced": fields.Integer(),
     "rejected": fields.Integer()}, name="DomainTraffic"), "DomainTrafficPage")


class RetentionSchema(Schema):
    days = fields.Integer(required=True, validate=validate.Range(1, 3650))


class ExpiringSchema(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    active = fields.Boolean(required=True)
    level = fields.String(required=True, validate=validate.OneOf(["warning", "critical", "expired"]))
    days_left = fields.Integer(required=True)
    not_after = fields.String(required=True)
    message = fields.String(required=True)


ExpiringPage = page_schema(ExpiringSchema, "ExpiringPage")


class CertificateRegeneratedSchema(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    active = fields.Boolean(required=True)
    not_after = fields.String(required=True)
    names = fields.List(fields.String(), required=True)
    used_by = fields.String(required=True)


class SrsSchema(Schema):
    domain = fields.String(required=True)
    secrets = fields.Integer(required=True)
    pending_signs_from = fields.Raw(required=True, allow_none=True)


class MailHostSchema(Schema):
    mail_host = fields.String(required=True)
    stored = fields.Boolean(required=True)
    qualified = fields.Boolean(required=True)
    problem = fields.String(required=True, allow_none=True)
    client_host = fields.String(required=True)
    client_mail_host = fields.String(required=True, allow_none=True)


class TemplateDiffArgs(Schema):
    a = fields.String(required=True, validate=validate.Length(1, 200), metadata={"description": "NAME[@VERSION]"})
    b = fields.String(required=True, validate=validate.Length(1, 200), metadata={"description": "NAME[@VERSION]"})


class TemplateDiffSchema(Schema):
    diff = fields.String(required=True, metadata={"description": "Unified diff; empty when they are the same."})


class FilterTestSchema(Schema):
    name = fields.String(validate=validate.Length(1, 64), metadata={"description": "A stored filter."})
    ldap_domain = fields.String(validate=validate.Length(1, 128))
    filter = fields.String(validate=validate.Length(1, 4096))
    limit = fields.Integer(load_default=20, validate=validate.Range(0, 500))


class FilterTriedSchema(Schema):
    filter = fields.String(required=True)
    ldap_domain = fields.String(required=True)
    count = fields.Integer(required=True)
    sample = fields.List(fields.String(), required=True)


DriftPage = page_schema(Schema.from_dict(
    {"component": fields.String(required=True), "path": fields.String(required=True),
     "state": fields.String(required=True, validate=validate.OneOf(["modified", "missing"]))}, name="DriftedFile"),
    "DriftPage")


class QuotaArgs(Schema):
    domain = fields.List(fields.String(validate=validate.Length(1, 253)),
                         metadata={"description": "Only these domains (repeat the parameter)."})
    top = fields.Integer(load_default=10, validate=validate.Range(1, 100))


class QuotaSchema(Schema):
    mailboxes = fields.Integer(required=True)
    quota_total_bytes = fields.Integer(required=True)
    unlimited = fields.Integer(required=True)
    measured = fields.Integer(required=True)
    used_total_bytes = fields.Integer(required=True)
    near_full = fields.Raw(required=True)
    oldest_measurement = fields.String(required=True, allow_none=True)
    largest = fields.List(fields.Dict(), required=True)
    last_run = fields.Dict(required=True, allow_none=True)
