"""/api/v1: impersonation accounts (dovecot master users that open the mailboxes of their
domains, for archiving and migration tools) and push endpoints (URLs told of new mail),
through the same services as `rupost impersonation|push`. Not for domain administrators'
tokens; changes are superadministrators'. Both take effect after the next deploy when the
first one is added (the template renders the feature only while one exists)."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from ..errors import NotFoundError
from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of
from .schemas_admin import (
    ImpersonationCreateSchema,
    ImpersonationPage,
    ImpersonationPatchSchema,
    ImpersonationSchema,
    ImpersonationUsePage,
    PushEndpointCreateSchema,
    PushEndpointPage,
    PushEndpointSchema,
    PushFailureArgs,
    PushFailurePage,
    PushTestedSchema,
)

bp = blueprint("integrations", "", "Impersonation accounts and push endpoints. Not for domain administrators' "
               "tokens.")


def _impersonation(name: str) -> dict:
    wanted = (name or "").strip().lower()
    for item in g.rp.impersonation.list():
        if item["name"] == wanted:
            return item
    raise NotFoundError(f"impersonation account {name} does not exist")


@bp.route("/impersonation")
class ImpersonationAccounts(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, ImpersonationPage)
    def get(self, **page):
        return page_of(g.rp.impersonation.list(), page)

    @idempotent
    @level("super")
    @bp.arguments(ImpersonationCreateSchema)
    @bp.response(201, ImpersonationSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        """Add an account that opens the mailboxes of its domains (login `user@domain*account`)."""
        made = g.rp.impersonation.add(data["name"], data["password"], data["domains"], data["description"])
        return made, 201, {"Location": url_for("api_integrations.ImpersonationAccount", name=made["name"])}


@bp.route("/impersonation/uses")
class ImpersonationUses(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, ImpersonationUsePage)
    def get(self, **page):
        """The journal of mailboxes opened by impersonation accounts, newest first (the last 10,000)."""
        return page_of(g.rp.impersonation.uses(limit=10_000), page)


@bp.route("/impersonation/<string:name>")
class ImpersonationAccount(MethodView):
    @level("global")
    @bp.response(200, ImpersonationSchema)
    def get(self, name):
        return _impersonation(name)

    @level("super")
    @bp.arguments(ImpersonationPatchSchema)
    @bp.response(200, ImpersonationSchema)
    def patch(self, data, name):
        """A new password, other domains, or enabled/disabled."""
        return g.rp.impersonation.set(name, **data)

    @level("super")
    @bp.response(204)
    def delete(self, name):
        g.rp.impersonation.remove(name)
        return ""


@bp.route("/push-endpoints")
class PushEndpoints(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, PushEndpointPage)
    def get(self, **page):
        """The endpoints with their failures of the last 24 hours."""
        return page_of(g.rp.push.list(), page)

    @idempotent
    @level("super")
    @bp.arguments(PushEndpointCreateSchema)
    @bp.response(201, PushEndpointSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        made = g.rp.push.add(data["name"], data["url"], data["domains"], data["secret"])
        return made, 201, {"Location": url_for("api_integrations.PushEndpoint", name=made["name"])}


@bp.route("/push-endpoints/failures")
class PushFailures(MethodView):
    @level("global")
    @bp.arguments(PushFailureArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, PushFailurePage)
    def get(self, args, **page):
        """Deliveries to the endpoints that failed, newest first (the last 1,000)."""
        return page_of(g.rp.push.failures(1000, args.get("endpoint")), page)


@bp.route("/push-endpoints/<string:name>")
class PushEndpoint(MethodView):
    @level("super")
    @bp.response(204)
    def delete(self, name):
        g.rp.push.remove(name)
        return ""


@bp.route("/push-endpoints/<string:name>/test")
class PushEndpointTest(MethodView):
    @level("super")
    @bp.response(200, PushTestedSchema)
    def post(self, name):
        """POST a test event to the endpoint now; a failure is a problem naming the error (and is journaled)."""
        return g.rp.push.test(name)
