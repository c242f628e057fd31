"""/api/v1 node-wide operations: nodes, templates, deploys (as jobs), certificates, security
blocks and calendar resources, through the same services as `rupost nodes|templates|deploy|
certificates|security|resources`."""
from __future__ import annotations

from flask import g
from flask.views import MethodView

from ..panel import jobs as job_store
from .common import PageArgs, blueprint, level, page_of
from .jobs import accepted
from .schemas import (
    BlockArgs,
    BlockPage,
    CertificatePage,
    DeploySchema,
    DistributionListArgs,
    GenerationPage,
    JobSchema,
    NodePage,
    NodeSchema,
    ResourcePage,
    ResourceSchema,
    RollbackSchema,
    TemplatePage,
    ThresholdsPatchSchema,
    ThresholdsSchema,
    UnblockedSchema,
)

bp = blueprint("operations", "", "The installation: nodes, templates, deploys, certificates, security blocks, "
               "calendar resources. Node-wide data is not for domain administrators' tokens.")


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


@bp.route("/templates")
class Templates(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, TemplatePage)
    def get(self, **page):
        return page_of(g.rp.templates.list(), page)


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


@bp.route("/resources")
class Resources(MethodView):
    @level("any")
    @bp.arguments(DistributionListArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, ResourcePage)
    def get(self, args, **page):
        """Calendar resources (rooms, equipment) of the token's domains."""
        return page_of(g.rp.resources.list(args.get("domain")), page)


@bp.route("/resources/<string:address>")
class Resource(MethodView):
    @level("any")
    @bp.response(200, ResourceSchema)
    def get(self, address):
        return g.rp.resources.show(address)


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
