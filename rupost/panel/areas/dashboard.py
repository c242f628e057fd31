"""The dashboard: a picture of the installation, not a log dump."""
from __future__ import annotations

from flask import Blueprint, g

from ...errors import RuPostError
from ...services.certificates import CertificateService
from ..charts import line_chart
from ..web import render, requires

bp = Blueprint("dashboard", __name__)
NAV = ("Dashboard", "dashboard.index", "any")


@bp.route("/")
@requires("any")
def index():
    rp, admin = g.rp, g.admin
    scope = admin.domain_scope
    summary = {"domains": rp.domains.page(None, scope, limit=1, with_counts=False)["total"],
               "mailboxes": rp.mailboxes.page(None, scope, limit=1)["total"],
               "aliases": rp.aliases.page(None, scope, limit=1)["total"]}
    context = {"summary": summary, "nodes": [], "deploys": [], "certificates": [], "warnings": [],
               "errors": [], "monitor": [], "stats": None}
    if admin.role != "domain_admin":
        nodes = rp.nodes.list()
        for node in nodes:
            node["alive"] = rp.nodes.alive(node)
            node["component_states"] = {k: v for k, v in (node["components"] or {}).items()
                                        if isinstance(v, dict)}
        context.update(nodes=nodes, deploys=_safe(lambda: rp.deploys.history(5), []),
                       certificates=CertificateService(rp).list(),
                       warnings=CertificateService(rp).expiry_warnings(),
                       monitor=rp.audit.monitor_events(10),
                       errors=[r for r in rp.audit.page(limit=200, with_total=False)["rows"]
                               if r["action"].endswith(".failed") or r["action"].endswith(".locked")][:10])
    context["stats"] = _stats(rp, scope)
    return render("dashboard.html", **context)


def _safe(call, default):
    try:
        return call()
    except RuPostError:
        return default


def _stats(rp, scope):
    """Deliveries and rejections over the last 24 hours from the statistics service, if present."""
    from sqlalchemy.exc import SQLAlchemyError

    if not hasattr(type(rp), "stats"):
        return None
    try:
        data = rp.stats.series(24, domains=scope)
    except (RuPostError, SQLAlchemyError):
        return None
    chart = line_chart(data["hours"], data["series"])
    chart["totals"] = data["totals"]
    return chart
