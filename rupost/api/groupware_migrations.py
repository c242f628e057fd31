"""/api/v1/groupware-migrations: calendars and contacts copied into SOGo from a CalDAV/CardDAV
server, per user with its report, through rupost.services.groupware_migration; a run is a job."""
from __future__ import annotations

from flask import g
from flask.views import MethodView

from ..services.groupware_migration import UserRow
from . import jobs
from .common import PageArgs, blueprint, documented_headers, idempotent, level, page_of
from .exchange_schemas import (
    GroupwareMigrationArgs,
    GroupwareMigrationPage,
    GroupwareMigrationStartSchema,
)
from .schemas import JobSchema

bp = blueprint("groupware_migrations", "/groupware-migrations", "Calendars and contacts migrated into SOGo: each "
               "user's last run and its report; a new run from a CalDAV/CardDAV server is a job.")


@bp.route("")
class GroupwareMigrations(MethodView):
    @level("any")
    @bp.arguments(GroupwareMigrationArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, GroupwareMigrationPage)
    def get(self, args, **page):
        return page_of(g.rp.groupware_migration.status(args.get("target")), page)

    @idempotent
    @level("global")
    @bp.arguments(GroupwareMigrationStartSchema)
    @bp.response(202, JobSchema)
    @bp.doc(**documented_headers())
    def post(self, data):
        """Start a migration from a CalDAV/CardDAV server as a job (poll it; its result is the
        summary with every refused item). Not for domain administrators' tokens: the node
        connects to the server the request names. ICS/VCF files are migrated with the CLI."""
        rows = [UserRow(n, u["target"], u["source_login"], u["source_password"])
                for n, u in enumerate(data["users"], start=1)]

        def work(rp, progress):
            progress(2, f"{len(rows)} user(s) from {data['source']}")
            return rp.groupware_migration.run(
                rows, sogo_admin=data["sogo_admin"], sogo_password=data["sogo_password"], source_url=data["source"],
                insecure=data["insecure"], resume=data["resume"], workers=data["workers"],
                progress=lambda line: progress(50, line))

        return jobs.accepted("groupware.migrate", work)
