"""/api/v1: the checks (read their last states, run them as a job), the sizing estimate and
backups (a job), through the same services as `rupost check|sizing|backup`."""
from __future__ import annotations

from flask import g
from flask.views import MethodView

from ..errors import ValidationError
from ..services.checks import CHECKS
from .common import PageArgs, blueprint, level, page_of
from .jobs import accepted
from .schemas import JobSchema
from .schemas_admin import BackupCreateSchema, BackupPage, CheckRunSchema, CheckStatesSchema, SizingArgs, SizingSchema

bp = blueprint("administration", "", "Self-diagnosis checks, sizing and backups of this node. Not for domain "
               "administrators' tokens.")


@bp.route("/checks")
class Checks(MethodView):
    @level("global")
    @bp.response(200, CheckStatesSchema)
    def get(self):
        """The state each check had at its last run here (the scheduler runs them every few minutes)."""
        return {"states": g.rp.checks.last_states()}

    @level("super")
    @bp.arguments(CheckRunSchema)
    @bp.response(202, JobSchema)
    def post(self, data):
        """Run the checks now, as a job whose result has each check's status and detail."""
        only, record = data["checks"], data["record"]
        unknown = [name for name in only or () if name not in CHECKS]
        if unknown:  # refused now (422), not in the job
            raise ValidationError(f"unknown check(s): {', '.join(unknown)} (checks: {', '.join(CHECKS)})")

        def work(rp, progress):
            progress(5, "running the checks: " + (", ".join(only) if only else "all"))
            results = rp.checks.run(record=record, only=only)
            return {"status": rp.checks.worst(results), "results": [r.as_dict() for r in results]}

        return accepted("checks", work)


@bp.route("/sizing")
class Sizing(MethodView):
    @level("global")
    @bp.arguments(SizingArgs, location="query")
    @bp.response(200, SizingSchema)
    def get(self, args):
        """The load parameters, limits and memory for a number of mailboxes (`rupost sizing`); nothing is set."""
        return g.rp.sizing.estimate(args["mailboxes"], args["sessions_per_user"])


@bp.route("/backups")
class Backups(MethodView):
    @level("global")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, BackupPage)
    def get(self, **page):
        """The backups in this node's backup directory, newest first."""
        return page_of(g.rp.backups.list(), page)

    @level("super")
    @bp.arguments(BackupCreateSchema)
    @bp.response(202, JobSchema)
    def post(self, data):
        """Back up the databases and the configuration (and the mail storage with `with_mail`) into a new
        directory of this node's backup directory, as a job."""
        with_mail = data["with_mail"]

        def work(rp, progress):
            progress(5, "dumping the databases" + (" and archiving the mail storage" if with_mail else ""))
            manifest = rp.backups.create(with_mail=with_mail)
            return {"path": manifest["path"], "files": manifest["files"], "counts": manifest["counts"]}

        return accepted("backup", work)
