"""Long actions of the panel (deploy, rollback...) in a background thread.

Each job is a row in ``panel_jobs`` (rupost database) with its progress, message,
result and error, so any gunicorn worker shows it; the page of a running job
refreshes itself. A job is run by the worker that accepted it; if that process
dies, the row stays ``running`` and the page says since when (the deploy itself
is protected by the deploy lock and recorded in the generations).
"""
from __future__ import annotations

import logging
import threading
import traceback

from sqlalchemy import select

from ..db.models import utcnow
from ..db.panel_models import PanelJob
from ..errors import DeployError, RuPostError

log = logging.getLogger("rupost.panel.jobs")


def submit(rp, kind: str, work) -> int:
    """Record a job and start `work(rp, progress)` in a thread; returns the job id.
    `progress(percent, message)` updates the row; `work` returns a JSON-able dict."""
    with rp.dbs.session("main") as s:
        job = PanelJob(kind=kind, status="queued", progress=0, message="", result={}, error="",
                       requested_by=rp.actor, node=rp.config.node_name)
        s.add(job)
        s.flush()
        job_id = job.id
    # not a daemon: a worker asked to stop (SIGTERM, restart) finishes the deploy before it exits
    thread = threading.Thread(target=_run, args=(rp, job_id, work), name=f"panel-job-{job_id}", daemon=False)
    thread.start()
    return job_id


def _update(rp, job_id: int, **values) -> None:
    with rp.dbs.session("main") as s:
        job = s.get(PanelJob, job_id)
        for key, value in values.items():
            setattr(job, key, value)


def _run(rp, job_id: int, work) -> None:
    _update(rp, job_id, status="running", started_at=utcnow(), progress=1)

    def progress(percent: int, message: str) -> None:
        _update(rp, job_id, progress=max(1, min(99, int(percent))), message=message[:2000])

    try:
        result = work(rp, progress) or {}
    except DeployError as exc:
        steps = [s.as_dict() for s in exc.outcome.steps] if exc.outcome is not None else []
        _update(rp, job_id, status="failed", error=str(exc), result={"steps": steps}, finished_at=utcnow(),
                progress=100)
    except RuPostError as exc:
        _update(rp, job_id, status="failed", error=str(exc), finished_at=utcnow(), progress=100)
    except Exception as exc:  # a bug must still end the job, with its trace in the log
        log.error("panel job %s failed:\n%s", job_id, traceback.format_exc())
        _update(rp, job_id, status="failed", error=f"internal error: {exc.__class__.__name__}: {exc}",
                finished_at=utcnow(), progress=100)
    else:
        _update(rp, job_id, status="done", result=result, finished_at=utcnow(), progress=100,
                message="finished")


def get(rp, job_id: int) -> dict | None:
    with rp.dbs.session("main") as s:
        job = s.get(PanelJob, job_id)
        return _as_dict(job) if job is not None else None


def recent(rp, limit: int = 20) -> list[dict]:
    with rp.dbs.session("main") as s:
        return [_as_dict(j) for j in s.scalars(select(PanelJob).order_by(PanelJob.id.desc()).limit(limit))]


def _as_dict(j: PanelJob) -> dict:
    return {"id": j.id, "kind": j.kind, "status": j.status, "progress": j.progress, "message": j.message,
            "result": j.result or {}, "error": j.error, "requested_by": j.requested_by, "node": j.node,
            "created_at": j.created_at.isoformat() if j.created_at else None,
            "started_at": j.started_at.isoformat() if j.started_at else None,
            "finished_at": j.finished_at.isoformat() if j.finished_at else None}


# ---------------------------------------------------------------------------- the work
def deploy_work(force: bool = False, expected: str | None = None):
    def work(rp, progress):
        if len(rp.nodes.list()) > 1:
            progress(10, "rolling deploy across the cluster's nodes")
            return {"rollout": rp.rollouts.run(force)}
        progress(10, "rendering the active template and comparing with the live files")
        plan = rp.deploys.plan()
        progress(40, "validating, switching, reloading and probing: "
                 + (", ".join(plan.changed) if plan.changed else "no changes"))
        return rp.deploys.deploy(plan, force, expected=expected).as_dict()

    return work


def rollback_work(generation: int | None, force: bool = False):
    def work(rp, progress):
        progress(20, f"returning to generation {generation or '(previous applied)'}")
        return rp.deploys.rollback(generation, force).as_dict()

    return work
