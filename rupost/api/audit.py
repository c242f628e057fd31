"""/api/v1/audit: the audit journal (who changed what, from where), filtered and paged."""
from __future__ import annotations

from flask import g
from flask.views import MethodView

from .common import PageArgs, blueprint, level, offset, paged
from .schemas import AuditArgs, AuditPage

bp = blueprint("audit", "/audit", "The audit journal, newest first. Not for domain administrators' tokens.")


@bp.route("")
class Audit(MethodView):
    @level("global")
    @bp.arguments(AuditArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, AuditPage)
    def get(self, args, **page):
        return paged(g.rp.audit.page(limit=page["per_page"], offset=offset(page), **args), page)
