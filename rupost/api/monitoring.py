"""/api/v1: LDAP filters, template documents and parameters, DKIM keys and DNS records of a
domain, mail statistics and mail queues, through the same services as `rupost ldap-filters|
template|domains dkim|domains dns|stats|mailqueues`."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of
from .schemas import (
    DkimSchema,
    DnsRecordsSchema,
    LdapFilterCreateSchema,
    LdapFilterPage,
    LdapFilterPatchSchema,
    LdapFilterSchema,
    ParameterPage,
    QueueActionResultSchema,
    QueueActionSchema,
    QueueArgs,
    QueuedMessageSchema,
    QueueListSchema,
    QueueShowArgs,
    StatsArgs,
    StatsSchema,
    TemplateArgs,
    TemplateDocumentSchema,
)
from .schemas_admin import (
    DkimGenerateSchema,
    DkimRotateSchema,
    ParametersPatchSchema,
    ParametersSchema,
    QueueFlushedSchema,
    QueueFlushSchema,
)

bp = blueprint("monitoring", "", "LDAP filters, templates, DKIM and DNS, statistics and mail queues. Not for "
               "domain administrators' tokens, except a domain's DKIM key and DNS records.")


@bp.route("/ldap-filters")
class LdapFilters(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, LdapFilterPage)
    def get(self, **page):
        """Named LDAP filters that dynamic distribution lists select their members with."""
        return page_of(g.rp.ldap_filters.list(), page)

    @idempotent
    @level("super")
    @bp.arguments(LdapFilterCreateSchema)
    @bp.response(201, LdapFilterSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        made = g.rp.ldap_filters.add(data["name"], data["ldap_domain"], data["filter"], data["description"])
        return made, 201, {"Location": url_for("api_monitoring.LdapFilter", name=made["name"])}


@bp.route("/ldap-filters/<string:name>")
class LdapFilter(MethodView):
    @level("super")
    @bp.arguments(LdapFilterPatchSchema)
    @bp.response(200, LdapFilterSchema)
    def patch(self, data, name):
        return g.rp.ldap_filters.set_filter(name, data["filter"])

    @level("super")
    @bp.response(204)
    def delete(self, name):
        g.rp.ldap_filters.remove(name)
        return ""


@bp.route("/templates/<string:name>")
class Template(MethodView):
    @level("global")
    @bp.arguments(TemplateArgs, location="query")
    @bp.response(200, TemplateDocumentSchema)
    def get(self, args, name):
        """A template's YAML as it was imported (the newest version unless `version`)."""
        return g.rp.templates.show(name, args.get("version"))

    @level("super")
    @bp.arguments(TemplateArgs, location="query")
    @bp.response(204)
    def delete(self, args, name):
        """Remove a custom template (the newest version unless `version`) that is not active."""
        g.rp.templates.remove(name, args.get("version"))
        return ""


@bp.route("/template-parameters")
class TemplateParameters(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, ParameterPage)
    def get(self, **page):
        """The active template's parameters with their values and defaults."""
        return page_of(g.rp.templates.parameters(), page)

    @level("super")
    @bp.arguments(ParametersPatchSchema)
    @bp.response(200, ParametersSchema)
    def patch(self, data):
        """Set parameters of the active template (`values`) or return them to their defaults (`unset`):
        the whole template is checked against the new values before any is stored."""
        return {"values": g.rp.templates.set_parameters(data["values"], data["unset"])}


@bp.route("/domains/<string:name>/dkim")
class Dkim(MethodView):
    @level("any")
    @bp.response(200, DkimSchema)
    def get(self, name):
        """The domain's active DKIM key and the TXT record to publish."""
        return g.rp.dkim.show(name)

    @level("any")
    @bp.arguments(DkimGenerateSchema)
    @bp.response(201, DkimSchema)
    def post(self, data, name):
        """Generate the domain's first DKIM key (OpenDKIM signs with it at once); publish its TXT record."""
        return g.rp.dkim.generate(name, data["selector"], data["bits"]), 201


@bp.route("/domains/<string:name>/dkim/rotate")
class DkimRotation(MethodView):
    @level("any")
    @bp.arguments(DkimRotateSchema)
    @bp.response(200, DkimSchema)
    def post(self, data, name):
        """A new key under a new selector; the previous one stays published in `previous` until removed."""
        return g.rp.dkim.rotate(name, data["selector"], data["bits"])


@bp.route("/domains/<string:name>/dns")
class DnsRecords(MethodView):
    @level("any")
    @bp.response(200, DnsRecordsSchema)
    def get(self, name):
        """The DNS records the domain needs (MX, SPF, DKIM, DMARC, autoconfiguration, SRV)."""
        return g.rp.dns_records.records(name)


@bp.route("/statistics")
class Statistics(MethodView):
    @level("global")
    @bp.arguments(StatsArgs, location="query")
    @bp.response(200, StatsSchema)
    def get(self, args):
        """Mail flow per hour (received, sent, delivered, deferred, bounced, rejected), rspamd's verdicts
        (filter_scanned, filter_rejected, filter_greylisted) and totals."""
        return g.rp.stats.series(args["hours"], domain=args.get("domain"), node=args.get("node"))


@bp.route("/queues")
class Queues(MethodView):
    @level("global")
    @bp.arguments(QueueArgs, location="query")
    @bp.response(200, QueueListSchema)
    def get(self, args):
        """Queued messages of this node, another node or the whole cluster, filtered."""
        return g.rp.mailqueues.list(args.get("node"), args["cluster"], args.get("match"), limit=args["limit"])


@bp.route("/queues/<string:qid>")
class QueuedMessage(MethodView):
    @level("global")
    @bp.arguments(QueueShowArgs, location="query")
    @bp.response(200, QueuedMessageSchema)
    def get(self, args, qid):
        """One queued message: its entry and its content (of this node unless `node`)."""
        shown = g.rp.mailqueues.show(qid, args.get("node"), args["headers_only"])
        content, truncated = shown.pop("content"), shown.pop("truncated")
        return {"message": shown, "content": content, "truncated": truncated}


@bp.route("/queues/actions")
class QueueActions(MethodView):
    @level("super")
    @bp.arguments(QueueActionSchema)
    @bp.response(200, QueueActionResultSchema)
    def post(self, data):
        """Hold, release, delete or requeue queued messages by id or by a filter (`match`, as `rupost mailqueues
        --all-matching`), on this node or another."""
        return g.rp.mailqueues.act(data["action"], ids=data["ids"], match=data["match"], node=data.get("node"))


@bp.route("/queues/flush")
class QueueFlush(MethodView):
    @level("super")
    @bp.arguments(QueueFlushSchema)
    @bp.response(200, QueueFlushedSchema)
    def post(self, data):
        """Attempt delivery now of every deferred message, or of the named ones, on this node or another."""
        return g.rp.mailqueues.flush(data["ids"] or None, data.get("node"))
