"""/api/v1/sender-rights: who may send as, or on behalf of, a mailbox that is not theirs
(users or groups), through rupost.services.sender_rights."""
from __future__ import annotations

from flask import g
from flask.views import MethodView

from .common import PageArgs, blueprint, level, page_of
from .exchange_schemas import SenderRightArgs, SenderRightCreateSchema, SenderRightPage, SenderRightSchema

bp = blueprint("sender_rights", "/sender-rights", "Send-as and send-on-behalf rights on a mailbox (shared or "
               "personal), granted to mailboxes or distribution lists (groups).")


@bp.route("")
class SenderRights(MethodView):
    @level("any")
    @bp.arguments(SenderRightArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, SenderRightPage)
    def get(self, args, **page):
        return page_of(g.rp.sender_rights.list(args.get("mailbox"), args.get("right")), page)

    @level("any")
    @bp.arguments(SenderRightCreateSchema)
    @bp.response(201, SenderRightSchema)
    def post(self, data):
        """Grant a right (409 if the grantee holds it already)."""
        return g.rp.sender_rights.grant(data["mailbox"], data["grantee"], data["right"]), 201


@bp.route("/<string:mailbox>/<any('send-as', 'send-on-behalf'):right>/<string:grantee>")
class SenderRight(MethodView):
    @level("any")
    @bp.response(204)
    def delete(self, mailbox, right, grantee):
        """Revoke a right: the next message submitted sees it."""
        g.rp.sender_rights.revoke(mailbox, grantee, right)
        return ""
