"""/api/v1/mailboxes: mailboxes and their bulk import, through rupost.services.mailboxes."""
from __future__ import annotations

import io

from flask import g, url_for
from flask.views import MethodView

from . import jobs
from .common import PageArgs, blueprint, documented_headers, idempotent, level, offset, paged, stale, with_etag
from .schemas import (
    JobSchema,
    MailboxCreateSchema,
    MailboxImportSchema,
    MailboxListArgs,
    MailboxPage,
    MailboxPatchSchema,
    MailboxSchema,
)

bp = blueprint("mailboxes", "/mailboxes", "Mailboxes of the local user directory.")
IF_MATCH = [{"in": "header", "name": "If-Match", "schema": {"type": "string"}, "required": False}]


@bp.route("")
class Mailboxes(MethodView):
    @level("any")
    @bp.arguments(MailboxListArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, MailboxPage)
    def get(self, args, **page):
        result = g.rp.mailboxes.page(search=args.get("search"), domains=args.get("domain"), sort=args["sort"],
                                     descending=args["descending"], limit=page["per_page"], offset=offset(page))
        return paged(result, page)

    @idempotent
    @level("any")
    @bp.arguments(MailboxCreateSchema)
    @bp.response(201, MailboxSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        created = g.rp.mailboxes.add(data["address"], data["password"], data["quota"], data["display_name"])
        return created, 201, {"Location": url_for("api_mailboxes.Mailbox", address=created["address"])}


@bp.route("/<string:address>")
class Mailbox(MethodView):
    @level("any")
    @bp.response(200, MailboxSchema)
    def get(self, address):
        return with_etag(g.rp.mailboxes.show(address))

    @level("any")
    @bp.arguments(MailboxPatchSchema)
    @bp.response(200, MailboxSchema)
    @bp.doc(parameters=IF_MATCH)
    def patch(self, data, address):
        refused = stale(g.rp.mailboxes.show(address))
        if refused is not None:
            return refused
        if "quota" in data:
            g.rp.mailboxes.set_quota(address, data["quota"])
        if "password" in data:
            g.rp.mailboxes.set_password(address, data["password"])
        if "enabled" in data:
            g.rp.mailboxes.set_enabled(address, data["enabled"])
        return with_etag(g.rp.mailboxes.show(address))

    @level("any")
    @bp.response(204)
    def delete(self, address):
        g.rp.mailboxes.remove(address)
        return ""


@bp.route("/import")
class MailboxImport(MethodView):
    @idempotent
    @level("any")
    @bp.arguments(MailboxImportSchema)
    @bp.response(202, JobSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        """Import mailboxes from CSV as a job: all rows or none (poll the job)."""
        text, check_only = data["csv"], data["check_only"]

        def work(rp, progress):
            progress(5, "checking every row, then hashing the passwords")
            return rp.mailboxes.import_csv(io.StringIO(text, newline=""), check_only=check_only)

        return jobs.accepted("mailbox.import", work)
