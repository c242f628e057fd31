"""/api/v1/shared-mailboxes: a team's mailbox its members open in their own IMAP session,
and its members (mailboxes or groups), through rupost.services.shared_mailboxes."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of, stale, with_etag
from .exchange_schemas import (
    DomainArgs,
    SharedMailboxCreateSchema,
    SharedMailboxPage,
    SharedMailboxPatchSchema,
    SharedMailboxSchema,
    SharedMemberRightsSchema,
)

bp = blueprint("shared_mailboxes", "/shared-mailboxes", "Shared mailboxes: no login of their own; members (users "
               "or groups) open them under Shared/ with IMAP ACL rights.")
IF_MATCH = [{"in": "header", "name": "If-Match", "schema": {"type": "string"}, "required": False}]


@bp.route("")
class SharedMailboxes(MethodView):
    @level("any")
    @bp.arguments(DomainArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, SharedMailboxPage)
    def get(self, args, **page):
        return page_of(g.rp.shared_mailboxes.list(args.get("domain")), page)

    @idempotent
    @level("any")
    @bp.arguments(SharedMailboxCreateSchema)
    @bp.response(201, SharedMailboxSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        created = g.rp.shared_mailboxes.add(data["address"], display_name=data["display_name"], quota=data["quota"],
                                            description=data["description"])
        return created, 201, {"Location": url_for("api_shared_mailboxes.SharedMailbox", address=created["address"])}


@bp.route("/<string:address>")
class SharedMailbox(MethodView):
    @level("any")
    @bp.response(200, SharedMailboxSchema)
    def get(self, address):
        return with_etag(g.rp.shared_mailboxes.show(address))

    @level("any")
    @bp.arguments(SharedMailboxPatchSchema)
    @bp.response(200, SharedMailboxSchema)
    @bp.doc(parameters=IF_MATCH)
    def patch(self, data, address):
        """Change its quota (members' saves and deliveries are held to it)."""
        refused = stale(g.rp.shared_mailboxes.show(address))
        if refused is not None:
            return refused
        if "quota" in data:
            g.rp.mailboxes.set_quota(g.rp.shared_mailboxes.show(address)["address"], data["quota"])
        return with_etag(g.rp.shared_mailboxes.show(address))

    @level("any")
    @bp.response(204)
    def delete(self, address):
        """Remove it (its stored mail stays on disk)."""
        g.rp.shared_mailboxes.remove(address)
        return ""


@bp.route("/<string:address>/members/<string:member>")
class Member(MethodView):
    @level("any")
    @bp.arguments(SharedMemberRightsSchema)
    @bp.response(200, SharedMailboxSchema)
    def put(self, data, address, member):
        """Grant a mailbox or a group these rights, replacing what it had."""
        return g.rp.shared_mailboxes.set_member(address, member, data["rights"])

    @level("any")
    @bp.response(200, SharedMailboxSchema)
    def delete(self, address, member):
        """Take the member out."""
        return g.rp.shared_mailboxes.remove_member(address, member)
