"""/api/v1: the node's maintenance, through the same services as `rupost dhparam|admins|db
status|queues evacuate|sizing --apply|srs rotate|domains check`: DH parameters, panel
lockouts, an administrator's account, the database cluster's state, the evacuation of failed
nodes' queues (a job), the sizing stored in the template, the SRS secret's rotation, the DNS
records check and a domain's certificate note."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from ..errors import ValidationError
from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of, with_text_files
from .jobs import accepted
from .schemas import JobSchema
from .schemas_maintenance import (
    AdminSchema,
    CertificateNoteSchema,
    DatabaseStatusSchema,
    DHParamImportSchema,
    DHParamPage,
    DHParamSchema,
    DnsCheckArgs,
    DnsCheckSchema,
    EvacuationSchema,
    LockoutPage,
    SizingAppliedSchema,
    SizingApplySchema,
)
from .schemas_reports import SrsSchema

bp = blueprint("maintenance", "", "The node's maintenance: DH parameters, panel lockouts, administrators' "
               "accounts, the database cluster, queue evacuation, sizing, SRS rotation, DNS checks.")
LOCKOUT_KINDS = ("address", "user")


@bp.route("/dhparams")
class DHParams(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, DHParamPage)
    def get(self, **page):
        """The Diffie-Hellman parameter sets; the active one goes to Postfix and Dovecot at the next deploy."""
        return page_of(g.rp.dhparams.list(), page)

    @idempotent
    @level("super")
    @bp.arguments(DHParamImportSchema)
    @bp.response(201, DHParamSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        """Import a set (checked: a PEM of 2048 bits or more) and make it the active one."""
        made = with_text_files({"dhparam.pem": data["pem"]},
                               lambda path: g.rp.dhparams.import_file(path, data["name"]))
        return made, 201, {"Location": url_for("api_maintenance.DHParams")}


@bp.route("/dhparams/<string:name>/activate")
class DHParamActivation(MethodView):
    @level("super")
    @bp.response(200, DHParamSchema)
    def post(self, name):
        """Make a stored set the active one (applied at the next deploy)."""
        return g.rp.dhparams.activate(name)


@bp.route("/dhparams/<string:name>")
class DHParam(MethodView):
    @level("super")
    @bp.response(204)
    def delete(self, name):
        """Remove a set that is neither the builtin fallback nor active."""
        g.rp.dhparams.remove(name)
        return ""


@bp.route("/admins/<string:login>")
class Admin(MethodView):
    @level("super")
    @bp.response(200, AdminSchema)
    def get(self, login):
        """A panel administrator's account (never its password or second factor)."""
        return g.rp.admins.show(login)


@bp.route("/security/lockouts")
class Lockouts(MethodView):
    @level("super")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, LockoutPage)
    def get(self, **page):
        """Client addresses and logins locked out of the panel and the API after failed attempts."""
        return page_of(g.rp.admins.lockouts(), page)


@bp.route("/security/lockouts/<string:kind>/<string:key>")
class Lockout(MethodView):
    @level("super")
    @bp.response(204)
    def delete(self, kind, key):
        """Lift a lockout: `kind` is `address` or `user`."""
        if kind not in LOCKOUT_KINDS:
            raise ValidationError(f"a lockout is of an address or a user, not {kind[:40]!r}")
        g.rp.admins.unlock(kind, key)
        return ""


@bp.route("/database")
class Database(MethodView):
    @level("global")
    @bp.response(200, DatabaseStatusSchema)
    def get(self):
        """The database: its Patroni members and their roles, lag and timeline, and which member each way
        of this node reaches now (`rupost db status`)."""
        return g.rp.database_ha.status().as_dict()


@bp.route("/evacuations")
class Evacuations(MethodView):
    @level("super")
    @bp.arguments(EvacuationSchema)
    @bp.response(202, JobSchema)
    def post(self, data):
        """Deliver the queued mail of failed nodes through this node, as a job (what the evacuator timer runs)."""
        only, timeout = data["node"], data["timeout"]

        def work(rp, progress):
            progress(5, f"looking for failed nodes with mail in their queue{f' ({only})' if only else ''}")
            reports = rp.evacuation.evacuate(only, timeout)
            return {"result": "; ".join(f"{r['node']}: {r['result']}" for r in reports)
                    or "no failed node has mail in its queue", "reports": reports}

        return accepted("evacuate", work)


@bp.route("/sizing/apply")
class SizingApply(MethodView):
    @level("super")
    @bp.arguments(SizingApplySchema)
    @bp.response(200, SizingAppliedSchema)
    def post(self, data):
        """Store the sizing estimate's load parameters in the active template's values (checked with its
        whole chain of limits first); nothing is deployed: the next deploy applies them."""
        estimate = g.rp.sizing.estimate(data["mailboxes"], data["sessions_per_user"])
        return {"parameters": g.rp.sizing.apply(estimate)}


@bp.route("/srs/rotate")
class SrsRotation(MethodView):
    @level("super")
    @bp.response(200, SrsSchema)
    def post(self):
        """A new SRS secret: every node verifies with it at once and signs with it once they all have it."""
        return g.rp.srs.rotate()


@bp.route("/domains/<string:name>/dns/check")
class DnsCheck(MethodView):
    @level("any")
    @bp.arguments(DnsCheckArgs, location="query")
    @bp.response(200, DnsCheckSchema)
    def get(self, args, name):
        """Ask DNS whether the records the domain needs are published, each `present`, `missing` or `wrong`."""
        return g.rp.dns_records.check(name, args["nameserver"], args["timeout"])


@bp.route("/domains/<string:name>/certificate-note")
class CertificateNote(MethodView):
    @level("any")
    @bp.response(200, CertificateNoteSchema)
    def get(self, name):
        """Whether the active mail certificate covers the domain's autoconfiguration names, and what to do."""
        g.rp.domains.show(name)  # exists and is the token's
        return {"note": g.rp.certificates.domain_note(name)}
