"""/api/v1/resources: calendar resources (rooms, equipment) that SOGo users book, through the
same service as `rupost resources`; a domain administrator's token manages its own domains'."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of, stale, with_etag
from .schemas import DistributionListArgs, ResourcePage, ResourceSchema
from .schemas_admin import ResourceAddedSchema, ResourceCreateSchema, ResourcePatchSchema, ResourceProvisionedSchema

bp = blueprint("resources", "/resources", "Calendar resources (rooms, equipment) of the token's domains.")
IF_MATCH = [{"in": "header", "name": "If-Match", "schema": {"type": "string"}, "required": False}]


@bp.route("")
class Resources(MethodView):
    @level("any")
    @bp.arguments(DistributionListArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, ResourcePage)
    def get(self, args, **page):
        """Calendar resources (rooms, equipment) of the token's domains."""
        return page_of(g.rp.resources.list(args.get("domain")), page)

    @idempotent
    @level("any")
    @bp.arguments(ResourceCreateSchema)
    @bp.response(201, ResourceAddedSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        """Add a resource and make it bookable in SOGo (`calendar` says whether that worked)."""
        address = data.pop("address")
        made = g.rp.resources.add(address, data.pop("kind"), **data)
        return made, 201, {"Location": url_for("api_resources.Resource", address=made["address"])}


@bp.route("/<string:address>")
class Resource(MethodView):
    @level("any")
    @bp.response(200, ResourceSchema)
    def get(self, address):
        return with_etag(g.rp.resources.show(address))

    @level("any")
    @bp.arguments(ResourcePatchSchema)
    @bp.response(200, ResourceSchema)
    @bp.doc(parameters=IF_MATCH)
    def patch(self, data, address):
        """Change the simultaneous bookings, the booking owner or the display name."""
        refused = stale(g.rp.resources.show(address))
        if refused is not None:
            return refused
        g.rp.resources.set(address, **data)
        return with_etag(g.rp.resources.show(address))

    @level("any")
    @bp.response(204)
    def delete(self, address):
        """Remove the resource; its calendar stays in SOGo's tables (bookings are not lost by mistake)."""
        g.rp.resources.remove(address)
        return ""


@bp.route("/<string:address>/provision")
class ResourceProvision(MethodView):
    @level("any")
    @bp.response(200, ResourceProvisionedSchema)
    def post(self, address):
        """Make it bookable in SOGo again (its calendar and rights); idempotent."""
        return g.rp.resources.provision(address)
