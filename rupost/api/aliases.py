"""/api/v1/aliases: forwarding addresses, through rupost.services.aliases."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from .common import PageArgs, blueprint, documented_headers, idempotent, level, offset, paged, with_etag
from .schemas import AliasCreateSchema, AliasListArgs, AliasPage, AliasSchema

bp = blueprint("aliases", "/aliases", "Aliases: an address forwarded to one or more destinations.")


@bp.route("")
class Aliases(MethodView):
    @level("any")
    @bp.arguments(AliasListArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, AliasPage)
    def get(self, args, **page):
        return paged(g.rp.aliases.page(search=args.get("search"), domains=args.get("domain"),
                                       limit=page["per_page"], offset=offset(page)), page)

    @idempotent
    @level("any")
    @bp.arguments(AliasCreateSchema)
    @bp.response(201, AliasSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        created = g.rp.aliases.add(data["address"], data["destinations"])
        return created, 201, {"Location": url_for("api_aliases.Alias", address=created["address"])}


@bp.route("/<string:address>")
class Alias(MethodView):
    @level("any")
    @bp.response(200, AliasSchema)
    def get(self, address):
        return with_etag(g.rp.aliases.show(address))

    @level("any")
    @bp.response(204)
    def delete(self, address):
        g.rp.aliases.remove(address)
        return ""
