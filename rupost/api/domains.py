"""/api/v1/domains: the mail domains, through rupost.services.domains."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from .common import PageArgs, blueprint, documented_headers, idempotent, level, offset, paged, stale, with_etag
from .schemas import DomainCreateSchema, DomainListArgs, DomainPage, DomainPatchSchema, DomainSchema

bp = blueprint("domains", "/domains", "Mail domains. A domain administrator's token sees its own domains only.")


def _one(name: str) -> dict:
    return g.rp.domains.show(name)


@bp.route("")
class Domains(MethodView):
    @level("any")
    @bp.arguments(DomainListArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, DomainPage)
    def get(self, args, **page):
        return paged(g.rp.domains.page(search=args.get("search"), limit=page["per_page"], offset=offset(page)), page)

    @idempotent
    @level("super")
    @bp.arguments(DomainCreateSchema)
    @bp.response(201, DomainSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        created = g.rp.domains.add(data["name"], data["description"])
        return created, 201, {"Location": url_for("api_domains.Domain", name=created["name"])}


@bp.route("/<string:name>")
class Domain(MethodView):
    @level("any")
    @bp.response(200, DomainSchema)
    def get(self, name):
        return with_etag(_one(name))

    @level("super")
    @bp.arguments(DomainPatchSchema)
    @bp.response(200, DomainSchema)
    @bp.doc(parameters=[{"in": "header", "name": "If-Match", "schema": {"type": "string"}, "required": False}])
    def patch(self, data, name):
        refused = stale(_one(name))
        if refused is not None:
            return refused
        g.rp.domains.set_enabled(name, data["enabled"])
        return with_etag(_one(name))

    @level("super")
    @bp.response(204)
    def delete(self, name):
        g.rp.domains.remove(name)
        return ""
