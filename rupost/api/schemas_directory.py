"""Marshmallow schemas of an LDAP domain's own settings beside its connection: which of its
groups and users become administrators (of the panel and the API), and its Kerberos single
sign-on (the keytab goes in, never out)."""
from __future__ import annotations

import base64
import binascii

from marshmallow import Schema, ValidationError, fields, validate

from ..services.directory_admins import ADMIN_ROLES
from ..services.directory_kerberos import KEYTAB_MAX
from .common import page_schema

KINDS = ("group", "user")


# ---------------------------------------------------------------------------- administrators by group
class LdapAdminMappingSchema(Schema):
    directory = fields.String(required=True, metadata={"description": "The LDAP domain."})
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    value = fields.String(required=True, metadata={"description": "The group's DN or the user's login."})
    role = fields.String(required=True, validate=validate.OneOf(ADMIN_ROLES))
    domains = fields.List(fields.String(), required=True, metadata={
        "description": "The mail domains of a domain_admin; empty for the other roles."})


LdapAdminMappingPage = page_schema(LdapAdminMappingSchema, "LdapAdminMappingPage")


class LdapAdminMappingCreateSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS), metadata={
        "description": "group: members of the group (nested groups too); user: one directory login."})
    value = fields.String(required=True, validate=validate.Length(1, 1024), metadata={
        "description": "The group's DN (e.g. CN=Mail admins,OU=Groups,DC=corp,DC=example) or the user's login."})
    role = fields.String(required=True, validate=validate.OneOf(ADMIN_ROLES))
    domains = fields.List(fields.String(validate=validate.Length(1, 253)), load_default=list,
                          validate=validate.Length(0, 1000), metadata={
                              "description": "The mail domains of a domain_admin (at least one)."})


class LdapAdminMappingRemoveArgs(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    value = fields.String(required=True, validate=validate.Length(1, 1024))


# ---------------------------------------------------------------------------- Kerberos
class Base64Bytes(fields.String):
    """Bytes sent as base64 text: JSON carries no binary, and a keytab is at most 64 KiB."""

    def _deserialize(self, value, attr, data, **kwargs) -> bytes:  # type: ignore[override]
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ValidationError("not base64: send the keytab file's bytes base64-encoded") from None


class LdapKerberosSetSchema(Schema):
    keytab = Base64Bytes(required=True, validate=validate.Length(1, (KEYTAB_MAX + 2) // 3 * 4), metadata={
        "description": "The keytab of the mail service account (principals imap/MAILHOST and smtp/MAILHOST), "
                       "base64-encoded (`base64 -w0 mail.keytab`). It is checked against the KDC before it is "
                       "stored and is never returned."})
    kdcs = fields.List(fields.String(validate=validate.Length(1, 255)), load_default=list,
                       validate=validate.Length(0, 20), metadata={
                           "description": "KDCs to check the keytab against (host or host:port); default: the "
                                          "domain controllers of the LDAP domain's URIs."})


class LdapKerberosSchema(Schema):
    """What may be shown of an LDAP domain's Kerberos settings: never the keys."""
    enabled = fields.Boolean(required=True, metadata={"description": "Whether a keytab is set."})
    realm = fields.String()
    host = fields.String(metadata={"description": "The mail host name the service principals are for."})
    principals = fields.List(fields.String(), metadata={"description": "The principals in the keytab."})
    kvnos = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "The key version the KDC issued tickets with, by service principal, when checked."})
    kdcs = fields.List(fields.String(), metadata={"description": "The KDCs it was checked against."})
    checked_at = fields.String()
    keytab_sha256 = fields.String(metadata={
        "description": "The first 16 hex digits of the keytab's SHA-256: which keytab, not its keys."})


class LdapKerberosStateSchema(LdapKerberosSchema):
    name = fields.String(required=True, metadata={"description": "The LDAP domain."})
