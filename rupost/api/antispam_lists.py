"""/api/v1/antispam-lists: the allow and deny lists of senders (rspamd on port 25), through
rupost.services.antispam_lists. An entry is named by its scope (a recipient domain, or `*` for
every domain) and its sender (an address or a domain)."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of, page_schema, with_etag

bp = blueprint("antispam_lists", "/antispam-lists",
               "Allow and deny lists of senders: deny refuses a sender's mail at SMTP time, allow keeps it from "
               "being rejected or marked for its spam score (not for a virus or a DMARC p=reject failure).")

KIND = validate.OneOf(["allow", "deny"])
SENDER = {"description": "An address (user@example.org) or a whole domain (example.org).",
          "example": "news@partner.example"}
SCOPE = {"description": "The recipient domain the entry applies to; `*` for every domain.", "example": "example.ru"}


class AntispamEntrySchema(Schema):
    id = fields.Integer(required=True)
    domain = fields.String(required=True, metadata=SCOPE)
    sender = fields.String(required=True, metadata=SENDER)
    kind = fields.String(required=True, validate=KIND)
    comment = fields.String(required=True)
    created_by = fields.String(required=True)


class AntispamEntryCreateSchema(Schema):
    sender = fields.String(required=True, validate=validate.Length(1, 320), metadata=SENDER)
    kind = fields.String(required=True, validate=KIND)
    domain = fields.String(load_default="*", validate=validate.Length(1, 253), metadata=SCOPE)
    comment = fields.String(load_default="", validate=validate.Length(0, 1000))


class AntispamListArgs(Schema):
    domain = fields.String(validate=validate.Length(1, 253),
                           metadata={"description": "Only this recipient domain's entries; `*` the global ones."})
    kind = fields.String(validate=KIND)


AntispamEntryPage = page_schema(AntispamEntrySchema, "AntispamEntryPage")


@bp.route("")
class AntispamLists(MethodView):
    @level("any")
    @bp.arguments(AntispamListArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, AntispamEntryPage)
    def get(self, args, **page):
        return page_of(g.rp.antispam_lists.list(args.get("domain"), args.get("kind")), page)

    @idempotent
    @level("any")
    @bp.arguments(AntispamEntryCreateSchema)
    @bp.response(201, AntispamEntrySchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        entry = g.rp.antispam_lists.set(data["kind"], data["sender"], data["domain"], data["comment"])
        return entry, 201, {"Location": url_for("api_antispam_lists.AntispamEntry", domain=entry["domain"],
                                                sender=entry["sender"])}


@bp.route("/<string:domain>/<string:sender>")
class AntispamEntry(MethodView):
    @level("any")
    @bp.response(200, AntispamEntrySchema)
    def get(self, domain, sender):
        return with_etag(g.rp.antispam_lists.show(sender, domain))

    @level("any")
    @bp.response(204)
    def delete(self, domain, sender):
        g.rp.antispam_lists.remove(sender, domain)
        return ""
