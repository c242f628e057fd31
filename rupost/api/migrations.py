"""/api/v1/migrations: IMAP migration into RuPost mailboxes (dsync from the source server),
through the same service as `rupost migrate imap|status`: its per-mailbox state, and a run as
a job. Superadministrators' (a run reads the sources' passwords); not for domain
administrators' tokens."""
from __future__ import annotations

import os
import tempfile

from flask import g
from flask.views import MethodView

from .common import PageArgs, blueprint, level, page_of
from .jobs import accepted
from .schemas import JobSchema
from .schemas_admin import MigrationArgs, MigrationPage, MigrationRunSchema

bp = blueprint("migrations", "/migrations", "IMAP migration from another mail server into RuPost mailboxes.")


@bp.route("")
class Migrations(MethodView):
    @level("global")
    @bp.arguments(MigrationArgs, location="query")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, MigrationPage)
    def get(self, args, **page):
        """Every migrated mailbox's state after its last run (of one source with `source`)."""
        return page_of(g.rp.migration.status(args.get("source")), page)

    @level("super")
    @bp.arguments(MigrationRunSchema)
    @bp.response(202, JobSchema)
    def post(self, data):
        """Copy the mailboxes of the map (folders, flags, dates) into existing RuPost mailboxes, as a job
        whose result is the run's summary. Incremental and one-way: run it again for newer mail."""
        ca_pem = data.pop("ca_pem")

        def work(rp, progress):
            progress(2, f"copying {data['source']}")
            with tempfile.TemporaryDirectory(prefix="rupost-api-migration-") as tmp:
                ca_file = None
                if ca_pem:  # the service reads the source's CA from a file, as the CLI's --ca-file
                    ca_file = os.path.join(tmp, "source-ca.pem")
                    fd = os.open(ca_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
                        fh.write(ca_pem)
                return rp.migration.run(data["source"], data["map"], map_name="map", ca_file=ca_file,
                                        insecure=data["insecure"], master_user=data["master_user"],
                                        master_password=data["master_password"], resume=data["resume"],
                                        workers=data["workers"], progress=lambda line: progress(50, line))

        return accepted("migration", work)
