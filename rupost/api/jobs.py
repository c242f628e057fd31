"""/api/v1/jobs: long operations (bulk import, deploy...) answered 202 with a job to poll.

The jobs are the panel's (``panel_jobs``, rupost.panel.jobs): one list whichever face
started them. A domain administrator's token sees the jobs it started only."""
from __future__ import annotations

from flask import g, url_for
from flask.views import MethodView

from ..errors import NotFoundError
from ..panel import jobs as job_store
from .common import PageArgs, blueprint, level, page_of
from .schemas import JobPage, JobSchema

bp = blueprint("jobs", "/jobs", "Long operations started through the API or the panel.")


def accepted(kind: str, work):
    """Start `work(rp, progress)` as a job of the calling token: 202, the job, its Location."""
    job_id = job_store.submit(g.rp, kind, work)
    return job_store.get(g.rp, job_id), 202, {"Location": url_for("api_jobs.Job", job_id=job_id)}


def _visible(job: dict) -> bool:
    return g.token.role != "domain_admin" or job["requested_by"] == g.rp.actor


@bp.route("")
class Jobs(MethodView):
    @level("any")
    @bp.arguments(PageArgs, location="query", as_kwargs=True)
    @bp.response(200, JobPage)
    def get(self, **page):
        return page_of([j for j in job_store.recent(g.rp, 200) if _visible(j)], page)


@bp.route("/<int:job_id>")
class Job(MethodView):
    @level("any")
    @bp.response(200, JobSchema)
    def get(self, job_id):
        job = job_store.get(g.rp, job_id) if job_id < 2**31 else None
        if job is None or not _visible(job):
            raise NotFoundError(f"job {job_id} does not exist")
        return job
