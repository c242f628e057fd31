"""/api/v1: what monitoring scripts read besides the checks (monitor events, session peaks,
mail flow per domain, expiring certificates, the SRS state, the mail host name) and a few
node-wide actions next to them (statistics retention, a builtin certificate regenerated, a
template diff, an LDAP filter tried, a deploy plan as a job, the configuration drift, the quota
use, the global address list, the LDAP sync's safety share), through the same services as `rupost stats|
sessions|cert|srs|settings mail-host|template diff|ldap-filters test`. Not for domain
administrators' tokens."""
from __future__ import annotations

from flask import g
from flask.views import MethodView

from .common import PageArgs, blueprint, level, page_of
from .jobs import accepted
from .schemas import JobSchema, StatsArgs
from .schemas_admin import DropShareSchema, GalArgs, GalPage
from .schemas_maintenance import MailHostSetResultSchema, MailHostSetSchema
from .schemas_reports import (
    CertificateRegeneratedSchema,
    DomainTrafficPage,
    DriftPage,
    ExpiringPage,
    FilterTestSchema,
    FilterTriedSchema,
    MailHostSchema,
    MonitorEventArgs,
    MonitorEventPage,
    PeakArgs,
    PeaksSchema,
    QuotaArgs,
    QuotaSchema,
    RetentionSchema,
    SrsSchema,
    TemplateDiffArgs,
    TemplateDiffSchema,
)

bp = blueprint("reports", "", "Monitor events, session peaks, mail flow per domain, expiring certificates, SRS "
               "and the mail host; statistics retention, builtin certificates, template diffs, LDAP filter "
               "tries. Not for domain administrators' tokens.")


@bp.route("/monitor-events")
class MonitorEvents(MethodView):
    @level("global")
    @bp.arguments(MonitorEventArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, MonitorEventPage)
    def get(self, args, **page):
        """The node agents' recent monitor events, newest first (the last 1,000)."""
        return page_of(g.rp.audit.monitor_events(1000, args["problems_only"]), page)


@bp.route("/session-peaks")
class SessionPeaks(MethodView):
    @level("global")
    @bp.arguments(PeakArgs, location="query")
    @bp.response(200, PeaksSchema)
    def get(self, args):
        """Concurrent sessions per hour and listener (IMAP, POP3, SMTP...): a node's peaks, or their sum."""
        return g.rp.session_peaks.series(args["hours"], args.get("node"))


@bp.route("/statistics/domains")
class DomainTraffic(MethodView):
    @level("global")
    @bp.arguments(StatsArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, DomainTrafficPage)
    def get(self, args, **page):
        """Mail flow totals per domain over the window, busiest first."""
        domains = [args["domain"]] if args.get("domain") else None
        return page_of(g.rp.stats.by_domain(args["hours"], domains, args.get("node")), page)


@bp.route("/statistics/retention")
class Retention(MethodView):
    @level("global")
    @bp.response(200, RetentionSchema)
    def get(self):
        """How many days of hourly statistics are kept."""
        return {"days": g.rp.stats.retention_days()}

    @level("super")
    @bp.arguments(RetentionSchema)
    @bp.response(200, RetentionSchema)
    def put(self, data):
        g.rp.stats.set_retention(data["days"])
        return {"days": g.rp.stats.retention_days()}


@bp.route("/certificates/expiring")
class ExpiringCertificates(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, ExpiringPage)
    def get(self, **page):
        """Certificates that expire within 30 days (warning), 7 days (critical), or have expired."""
        return page_of(g.rp.certificates.expiry_warnings(), page)


@bp.route("/certificates/<string:name>/regenerate")
class CertificateRegeneration(MethodView):
    @level("super")
    @bp.response(200, CertificateRegeneratedSchema)
    def post(self, name):
        """A new self-signed builtin certificate (builtin names only) for the node's names."""
        return g.rp.certificates.regenerate_builtin(name)


@bp.route("/srs")
class Srs(MethodView):
    @level("global")
    @bp.response(200, SrsSchema)
    def get(self):
        """The sender rewriting scheme's state: its domain, how many secrets verify, a pending rotation."""
        return g.rp.srs.status()


@bp.route("/settings/mail-host")
class MailHost(MethodView):
    @level("global")
    @bp.response(200, MailHostSchema)
    def get(self):
        """The mail host name, whether it is fully qualified, and the host mail clients are told."""
        return g.rp.settings.mail_host_state()

    @level("super")
    @bp.arguments(MailHostSetSchema)
    @bp.response(200, MailHostSetResultSchema)
    def put(self, data):
        """Check and store the mail host name (`rupost settings mail-host`): the state afterwards, whether it
        changed, and notes (the deploy that applies it, certificates that do not cover it)."""
        return g.rp.settings.set_mail_host(data["mail_host"], data["allow_unqualified"])


@bp.route("/templates/diff")
class TemplateDiff(MethodView):
    @level("global")
    @bp.arguments(TemplateDiffArgs, location="query")
    @bp.response(200, TemplateDiffSchema)
    def get(self, args):
        """A unified diff of two templates' full documents (`NAME` or `NAME@VERSION` each)."""
        return {"diff": g.rp.templates.diff(args["a"], args["b"])}


@bp.route("/ldap-filters/test")
class LdapFilterTest(MethodView):
    @level("global")
    @bp.arguments(FilterTestSchema)
    @bp.response(200, FilterTriedSchema)
    def post(self, data):
        """Who a stored filter (`name`), or a filter being written (`ldap_domain` and `filter`), selects."""
        return g.rp.ldap_filters.test(data.get("name"), ldap_domain=data.get("ldap_domain"),
                                      text=data.get("filter"), limit=data["limit"])


@bp.route("/deploys/drift")
class Drift(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, DriftPage)
    def get(self, **page):
        """Live configuration files changed or removed by hand since the last deploy."""
        return page_of(g.rp.deploys.drift(), page)


@bp.route("/deploys/plan")
class DeployPlan(MethodView):
    @level("global")
    @bp.response(202, JobSchema)
    def post(self):
        """Render the active template, compare it with the live files and run every component's checker on
        them, as a job whose result is the plan (changed components, diffs, the digest a deploy applies)."""
        def work(rp, progress):
            progress(10, "rendering the active template and running the components' checkers")
            plan = rp.deploys.plan(check=True)
            return {"template": plan.template, "version": plan.version, "changed": plan.changed,
                    "current_generation": plan.current_generation, "digest": plan.digest, "checked": plan.checked,
                    "diffs": plan.diffs, "drift": rp.deploys.drift()}

        return accepted("plan", work)


@bp.route("/quota")
class Quota(MethodView):
    @level("any")
    @bp.arguments(QuotaArgs, location="query")
    @bp.response(200, QuotaSchema)
    def get(self, args):
        """Mailbox quota use from the last measurement (of the token's domains): totals, the mailboxes near
        full and the largest ones."""
        return g.rp.quota_usage.summary(g.rp.scoped(args.get("domain")), top=args["top"])


@bp.route("/gal")
class Gal(MethodView):
    @level("global")
    @bp.arguments(GalArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, GalPage)
    def get(self, args, **page):
        """The global address list: the directories' active users with their names and phones."""
        return page_of(g.rp.directories.gal(args["search"], limit=10_000), page)


@bp.route("/settings/ldap-max-drop-share")
class MaxDropShare(MethodView):
    @level("global")
    @bp.response(200, DropShareSchema)
    def get(self):
        """The share of a directory's accounts a sync may disable at once before it refuses (force overrides)."""
        return {"share": g.rp.directories.max_drop_share()}

    @level("super")
    @bp.arguments(DropShareSchema)
    @bp.response(200, DropShareSchema)
    def put(self, data):
        g.rp.directories.set_max_drop_share(data["share"])
        return {"share": g.rp.directories.max_drop_share()}
