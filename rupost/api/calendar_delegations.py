"""/api/v1/calendar-delegations: another user's read, write or free/busy rights on a user's
personal calendar (SOGo's ACLs), through rupost.services.calendar_delegation."""
from __future__ import annotations

from flask import g
from flask.views import MethodView

from .common import PageArgs, blueprint, level, page_of
from .exchange_schemas import (
    CalendarDelegationArgs,
    CalendarDelegationPage,
    CalendarDelegationSchema,
    CalendarRightsSchema,
)

bp = blueprint("calendar_delegations", "/calendar-delegations", "Delegated calendars: a delegate reads, writes or "
               "sees the busy times of an owner's personal calendar.")


@bp.route("")
class CalendarDelegations(MethodView):
    @level("any")
    @bp.arguments(CalendarDelegationArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, CalendarDelegationPage)
    def get(self, args, **page):
        return page_of(g.rp.calendar_delegations.list(args.get("owner")), page)


@bp.route("/<string:owner>/<string:delegate>")
class CalendarDelegation(MethodView):
    @level("any")
    @bp.arguments(CalendarRightsSchema)
    @bp.response(200, CalendarDelegationSchema)
    def put(self, data, owner, delegate):
        """Delegate the owner's calendar, replacing what the delegate had."""
        return g.rp.calendar_delegations.delegate(owner, delegate, data["rights"])

    @level("any")
    @bp.response(204)
    def delete(self, owner, delegate):
        g.rp.calendar_delegations.revoke(owner, delegate)
        return ""
