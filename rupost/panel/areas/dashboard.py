"""The dashboard: a picture of the installation, not a log dump.

Node-wide tiles (not for domain administrators): nodes in/out of service, mail queue sizes
per node (``postqueue`` service, cached for ``QUEUE_TTL`` seconds: a node whose queue cannot
be read says so), mail storage disk use (the file system of the mail storage path, as
``rupost check`` measures it), this node's sessions against each listener's limit (the
``capacity`` check) and their peaks per hour (``session_peaks``). For everyone: quota use over
the mailboxes they may see (``quota_usage`` service: SQL over the last measurement, which runs in the background).
Everything is bounded: the page does the same work at 100 and at 100,000 mailboxes."""
from __future__ import annotations

import os
import threading
import time

from flask import Blueprint, g, redirect, url_for
from sqlalchemy.exc import SQLAlchemyError

from ...db.stats_models import FILTER_COUNTERS, MAIL_COUNTERS
from ...errors import RuPostError
from .. import jobs
from ..charts import line_chart
from ..web import render, requires

QUEUE_TTL = 15.0  # seconds a reading of the queues serves the dashboard
QUEUE_RELAY_TIMEOUT = 2  # seconds another node's core gets to answer for its queue (then: not readable)
QUEUE_NAMES = ("active", "incoming", "deferred", "hold")
_queue_cache: dict = {}
_queue_lock = threading.Lock()

bp = Blueprint("dashboard", __name__)
NAV = ("Dashboard", "dashboard.index", "any")


@bp.route("/")
@requires("any")
def index():
    rp, admin = g.rp, g.admin
    scope = admin.domain_scope
    quota = _quota(rp, scope, start_measurement=admin.role != "domain_admin")
    summary = {"domains": rp.domains.page(None, scope, limit=1, with_counts=False)["total"],
               # the quota tile counted them already (one scan of the mailboxes, not two)
               "mailboxes": quota["mailboxes"] if quota else rp.mailboxes.page(None, scope, limit=1)["total"],
               "aliases": rp.aliases.page(None, scope, limit=1)["total"]}
    context = {"summary": summary, "nodes": [], "deploys": [], "certificates": [], "warnings": [],
               "errors": [], "monitor": [], "stats": None, "queues": [], "storage": None,
               "capacity": [], "session_peaks": None}
    if admin.role != "domain_admin":
        nodes = rp.nodes.list()
        for node in nodes:
            node["alive"] = rp.nodes.alive(node)
            node["component_states"] = {k: v for k, v in (node["components"] or {}).items()
                                        if isinstance(v, dict)}
        context.update(nodes=nodes, deploys=_safe(lambda: rp.deploys.history(5), []),
                       certificates=rp.certificates.list(),
                       warnings=rp.certificates.expiry_warnings(),
                       monitor=rp.audit.monitor_events(10),
                       errors=[r for r in rp.audit.page(limit=200, with_total=False)["rows"]
                               if r["action"].endswith(".failed") or r["action"].endswith(".locked")][:10],
                       queues=_queues(rp), storage=_storage(rp), capacity=_capacity(rp),
                       session_peaks=_session_peaks(rp))
    context["stats"] = _stats(rp, scope)
    context["quota"] = quota
    return render("dashboard.html", **context)


@bp.route("/quota/measure", methods=["POST"])
@requires("super")
def measure_quota():
    """Measure every mailbox's use now (what the dashboard otherwise does when it is stale)."""
    def work(rp, progress):
        progress(2, "asking dovecot for the use of every mailbox (doveadm quota get -A)")
        r = rp.quota_usage.measure(progress=progress, wait=3600)
        return {"result": f"{r['measured']} of {r['mailboxes']} mailbox(es) measured in {r['seconds']} s"
                          + ("" if r["complete"] else " (incomplete: " + ("deadline reached" if r["timed_out"]
                                                                          else "; ".join(r["errors"][:3])) + ")")}

    rp = g.rp
    rp.audit.record("quota_usage.measure", "all")
    return redirect(url_for("jobs.show", job_id=jobs.submit(rp, "quota-measure", work)))


def _queues(rp) -> list[dict]:
    """Counts per queue of every node; cached briefly (postqueue reads every queue file)."""
    with _queue_lock:
        cached = _queue_cache.get("value")
        if cached is not None and time.monotonic() - _queue_cache["at"] < QUEUE_TTL:
            return cached
    try:
        listing = rp.mailqueues.list(cluster=True, timeout=QUEUE_RELAY_TIMEOUT)
    except RuPostError as exc:
        value = [{"node": rp.config.node_name, "reachable": False, "error": str(exc), "counts": {}}]
    else:
        # per queue as each node counted them (a list relayed from a node holds only its first messages)
        counts = {n["node"]: {q: 0 for q in QUEUE_NAMES} for n in listing["nodes"]}
        for n in listing["nodes"]:
            for queue, number in (n.get("queues") or {}).items():
                counts[n["node"]][queue if queue in QUEUE_NAMES else "incoming"] += number  # maildrop: not picked up
        value = [{"node": n["node"], "reachable": n["reachable"], "error": n["error"],
                  "counts": {**counts[n["node"]], "total": sum(counts[n["node"]].values())} if n["reachable"]
                  else {}} for n in listing["nodes"]]
    with _queue_lock:
        _queue_cache.update(value=value, at=time.monotonic())
    return value


def _storage(rp) -> dict:
    """Space and inodes of the file system holding the mail storage (like `rupost check`)."""
    path = rp.layout.mail_storage
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError as exc:
        return {"path": str(path), "error": str(exc)}
    size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return {"path": str(path), "error": "", "size": size, "used": used, "free": free,
            "percent": round(100.0 * used / size, 1) if size else 0.0,
            "inodes_percent": round(100.0 * (st.f_files - st.f_ffree) / st.f_files, 1) if st.f_files else 0.0}


def _quota(rp, scope, start_measurement: bool) -> dict | None:
    service = rp.quota_usage
    try:
        summary = service.summary(scope, top=10)
    except (RuPostError, SQLAlchemyError):  # e.g. the database not upgraded yet (rupost db upgrade)
        return None
    summary["refreshing"] = False
    if start_measurement and service.stale(summary["last_run"]):
        try:
            service.dovecot_conf()
        except RuPostError:
            return summary  # nothing deployed here yet: nothing to measure
        summary["refreshing"] = service.refresh_in_background()
    return summary


def _capacity(rp) -> list:
    """This node's live sessions against each listener's limit, as `rupost check` reads them
    (HAProxy's counters; nothing recorded from here)."""
    from ...services.checks import check_capacity

    return _safe(lambda: check_capacity(rp), [])


def _session_peaks(rp) -> list | None:
    """This node's peak concurrent sessions of each listener: this hour's and the last 24 hours'
    (sampled by the node agent, rupost/services/session_peaks.py)."""
    try:
        data = rp.session_peaks.series(24, node=rp.config.node_name)
    except (RuPostError, SQLAlchemyError):
        return None
    return [{"listener": name, "hour": values[-1], "day": data["peaks"][name]}
            for name, values in data["series"].items()]


def _safe(call, default):
    try:
        return call()
    except RuPostError:
        return default


def _stats(rp, scope):
    """Deliveries and rejections over the last 24 hours from the statistics service, if present."""
    from sqlalchemy.exc import SQLAlchemyError

    if not hasattr(type(rp), "stats"):
        return None
    try:
        data = rp.stats.series(24, domains=scope)
    except (RuPostError, SQLAlchemyError):
        return None
    # the mail flow is drawn; rspamd's verdicts (a share of what was received) are listed
    chart = line_chart(data["hours"], {c: data["series"][c] for c in MAIL_COUNTERS})
    chart["totals"] = data["totals"]
    chart["filter"] = {c: data["totals"][c] for c in FILTER_COUNTERS}
    return chart
