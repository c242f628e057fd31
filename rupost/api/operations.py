"""/api/v1 node-wide operations: nodes, templates, deploys (as jobs), certificates, security
blocks and the monitoring thresholds, through the same services as `rupost nodes|templates|
deploy|certificates|security|settings thresholds`."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from ..panel import jobs as job_store
from ..services.templates import raw_snippets
from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of, with_text_files
from .jobs import accepted
from .schemas import (
    BlockArgs,
    BlockPage,
    CertificatePage,
    DeploySchema,
    GenerationPage,
    JobSchema,
    NodePage,
    NodeSchema,
    RollbackSchema,
    TemplatePage,
    ThresholdsPatchSchema,
    ThresholdsSchema,
    UnblockedSchema,
)
from .schemas_admin import (
    CertificateActivatedSchema,
    CertificateAddedSchema,
    CertificateDetailSchema,
    CertificateUploadSchema,
    NodePatchSchema,
    NodeRemoveArgs,
    TemplateActivatedSchema,
    TemplateTextSchema,
    TemplateValidatedSchema,
    TemplateVersionArgs,
)

bp = blueprint("operations", "", "The installation: nodes, templates, deploys, certificates, security blocks, "
               "monitoring thresholds. Node-wide data is not for domain administrators' tokens.")


@bp.route("/nodes")
class Nodes(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, NodePage)
    def get(self, **page):
        return page_of(g.rp.nodes.list(), page)


@bp.route("/nodes/<string:name>")
class Node(MethodView):
    @level("global")
    @bp.response(200, NodeSchema)
    def get(self, name):
        return g.rp.nodes.show(name)

    @level("super")
    @bp.arguments(NodePatchSchema)
    @bp.response(200, NodeSchema)
    def patch(self, data, name):
        """Drain a node (clients go to the others; its queued mail is still delivered) or enable it again."""
        return g.rp.nodes.set_admin_state(name, data["drained"])

    @level("super")
    @bp.arguments(NodeRemoveArgs, location="query")
    @bp.response(204)
    def delete(self, args, name):
        """Forget a node that left the cluster (refused while it reports heartbeats, unless `force`)."""
        g.rp.nodes.remove(name, force=args["force"])
        return ""


@bp.route("/templates")
class Templates(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, TemplatePage)
    def get(self, **page):
        return page_of(g.rp.templates.list(), page)

    @idempotent
    @level("super")
    @bp.arguments(TemplateTextSchema)
    @bp.response(201, TemplateValidatedSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        """Import a custom template (validated first; versions are immutable). It runs on every node once
        activated and deployed: the audit record names each raw snippet it carries."""
        made = g.rp.templates.import_text(data["text"], "<api>")
        return made, 201, {"Location": url_for("api_monitoring.Template", name=made["name"], version=made["version"])}


@bp.route("/templates/validate")
class TemplateValidation(MethodView):
    @level("global")
    @bp.arguments(TemplateTextSchema)
    @bp.response(200, TemplateValidatedSchema)
    def post(self, data):
        """Every check of an import (shape, schema, parameters, rendering against this node), storing nothing."""
        doc = g.rp.templates.validate(data["text"], "<api>")
        return {"name": doc.name, "version": doc.version, "extends": doc.extends, "raw_snippets": raw_snippets(doc)}


@bp.route("/templates/<string:name>/activate")
class TemplateActivation(MethodView):
    @level("super")
    @bp.arguments(TemplateVersionArgs, location="query")
    @bp.response(200, TemplateActivatedSchema)
    def post(self, args, name):
        """Make a template (the newest version unless `version`) the one the next deploy renders."""
        g.rp.templates.activate(name, args.get("version"))
        shown = g.rp.templates.show(name, args.get("version"))
        return {"name": shown["name"], "version": shown["version"], "active": shown["active"]}


@bp.route("/deploys")
class Deploys(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, GenerationPage)
    def get(self, **page):
        """This node's generations, newest first."""
        return page_of(g.rp.deploys.history(500), page)

    @level("super")
    @bp.arguments(DeploySchema)
    @bp.response(202, JobSchema)
    def post(self, data):
        """Deploy the active template (a rolling deploy on a cluster) as a job."""
        return accepted("deploy", job_store.deploy_work(data["force"]))


@bp.route("/deploys/rollback")
class Rollback(MethodView):
    @level("super")
    @bp.arguments(RollbackSchema)
    @bp.response(202, JobSchema)
    def post(self, data):
        """Return to an earlier generation as a job."""
        return accepted("rollback", job_store.rollback_work(data["generation"], data["force"]))


@bp.route("/certificates")
class Certificates(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, CertificatePage)
    def get(self, **page):
        return page_of(g.rp.certificates.list(), page)

    @idempotent
    @level("super")
    @bp.arguments(CertificateUploadSchema)
    @bp.response(201, CertificateAddedSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        """Upload a certificate with its chain and key (checked: names, key, dates), active or not."""
        made = with_text_files({"certificate.pem": data["certificate"], "key.pem": data["key"]},
                               lambda cert, key: g.rp.certificates.add(data["name"], data["type"], cert, key,
                                                                      activate=data["activate"]))
        return made, 201, {"Location": url_for("api_operations.CertificateItem", name=made["name"])}


@bp.route("/certificates/<string:name>")
class CertificateItem(MethodView):
    @level("global")
    @bp.response(200, CertificateDetailSchema)
    def get(self, name):
        return g.rp.certificates.show(name)

    @level("super")
    @bp.response(204)
    def delete(self, name):
        """Remove a certificate that is neither builtin nor active."""
        g.rp.certificates.remove(name)
        return ""


@bp.route("/certificates/<string:name>/activate")
class CertificateActivation(MethodView):
    @level("super")
    @bp.response(200, CertificateActivatedSchema)
    def post(self, name):
        """Make it the active certificate of its type (checked again); mail certificates apply at the next deploy."""
        return g.rp.certificates.activate(name)


@bp.route("/security/blocks")
class Blocks(MethodView):
    @level("global")
    @bp.arguments(BlockArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, BlockPage)
    def get(self, args, **page):
        """Client addresses and accounts blocked after failed logins."""
        return page_of(g.rp.blocklist.list(args["include_expired"]), page)


@bp.route("/security/blocks/<string:value>")
class Block(MethodView):
    @level("super")
    @bp.response(200, UnblockedSchema)
    def delete(self, value):
        """Lift a block (an address or an account) and forget its failures."""
        return g.rp.blocklist.unblock(value)


@bp.route("/settings/thresholds")
class Thresholds(MethodView):
    @level("global")
    @bp.response(200, ThresholdsSchema)
    def get(self):
        """The monitoring thresholds of the checks (disk, queue, capacity, database lag)."""
        return {"thresholds": g.rp.settings.thresholds()}

    @level("super")
    @bp.arguments(ThresholdsPatchSchema)
    @bp.response(200, ThresholdsSchema)
    def patch(self, data):
        """Set thresholds (`values`) or return them to their defaults (`unset`): all or none."""
        return {"thresholds": g.rp.settings.set_thresholds(data["values"], data["unset"])}
