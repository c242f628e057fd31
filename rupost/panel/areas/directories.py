"""Directories (LDAP domains): list, add, edit, remove, test the connection, sync now;
the named LDAP filters (the members of dynamic distribution lists): add, edit, test, remove.

Node-wide: domain administrators get 403. Read-only administrators see the lists and may
run a connection test or a filter preview (they read the directory and change nothing);
adding, editing, removing, syncing and the write-back are for superadministrators. A sync
and a write-back run as background jobs (``rupost.panel.jobs``) because a large directory
takes a while; the write-back's dry run is shown on the LDAP domain's page, and so is Kerberos
single sign-on (an uploaded keytab, checked against the KDC; only its realm and principals are
shown back).
Everything calls ``rupost.services.directories`` and the ``ldap_filters`` service, the
same calls as ``rupost ldap-domains`` and ``rupost ldap-filters`` (audited there); the
service account password is never shown back, and an empty password field when editing
keeps the stored one."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from rupost.ldap.client import KINDS, SECURITY

from ...errors import RuPostError
from ...services.directory_kerberos import KEYTAB_MAX
from .. import jobs
from ..i18n import gettext as _
from ..web import attempt, fail, render, requires

bp = Blueprint("directories", __name__, url_prefix="/directories")
NAV = ("Directories", "directories.index", "global")
MAX_FILTER = 4000


def _index(report=None, preview=None, status=200):
    return render("directories.html", directories=g.rp.directories.list(), report=report, kinds=KINDS,
                  securities=SECURITY, filters=g.rp.ldap_filters.list(), preview=preview), status


def _timeout(form) -> int:
    try:
        return int(form.get("timeout", "10") or 10)
    except ValueError:
        return -1  # refused by the service with its own message


def _mail_domains(form) -> list[str]:
    return [d for d in form.get("mail_domains", "")[:20_000].replace(",", " ").split() if d]


@bp.route("/")
@requires("global")
def index():
    return _index()


@bp.route("/add", methods=["POST"])
@requires("super")
def add():
    form = request.form
    attempt(lambda: g.rp.directories.add(
        form.get("name", ""), form.get("kind", ""), [form.get("uris", "")[:4000]], form.get("base_dn", "")[:2000],
        form.get("bind_dn", "")[:2000], form.get("bind_password", "")[:1000], security=form.get("security", "ldaps"),
        ca_pem=form.get("ca_pem", "")[:200_000], mail_domains=_mail_domains(form),
        user_filter=form.get("user_filter", "")[:MAX_FILTER], group_filter=form.get("group_filter", "")[:MAX_FILTER],
        timeout=_timeout(form), allow_plain=form.get("allow_plain") == "1", check=form.get("no_check") != "1"),
        "LDAP domain added. Run a deploy to use it for authentication, then sync it.")
    return redirect(url_for("directories.index"))


@bp.route("/<name>/edit", methods=["GET", "POST"])
@requires("super")
def edit(name):
    try:
        current = g.rp.directories.show(name)
    except RuPostError as exc:
        fail(str(exc))
        return redirect(url_for("directories.index"))
    if request.method == "GET":
        return render("directory_edit.html", d=current, ca_pem=g.rp.directories.get_settings(name).ca_pem,
                      kinds=KINDS, securities=SECURITY)
    form = request.form
    ok = attempt(lambda: g.rp.directories.update(
        current["name"], uris=[form.get("uris", "")[:4000]], base_dn=form.get("base_dn", "")[:2000],
        bind_dn=form.get("bind_dn", "")[:2000],
        bind_password=form.get("bind_password", "")[:1000] or None,  # empty: keep the stored one
        security=form.get("security", ""), ca_pem=form.get("ca_pem", "")[:200_000],
        allow_plain=form.get("allow_plain") == "1", mail_domains=_mail_domains(form),
        user_filter=form.get("user_filter", "")[:MAX_FILTER], group_filter=form.get("group_filter", "")[:MAX_FILTER],
        timeout=_timeout(form), enabled=form.get("enabled") == "1"),
        "LDAP domain saved. Run a deploy to apply it to authentication.")
    if ok:
        return redirect(url_for("directories.index"))
    # the form again, with what was typed (never the password), and the service's message
    typed = {**current, "uris": form.get("uris", "").replace(",", " ").split(), "base_dn": form.get("base_dn", ""),
             "bind_dn": form.get("bind_dn", ""), "security": form.get("security", ""),
             "mail_domains": _mail_domains(form), "user_filter": form.get("user_filter", ""),
             "group_filter": form.get("group_filter", ""), "timeout": form.get("timeout", ""),
             "enabled": form.get("enabled") == "1"}
    return render("directory_edit.html", d=typed, ca_pem=form.get("ca_pem", "")[:200_000], kinds=KINDS,
                  securities=SECURITY), 400


@bp.route("/<name>/remove", methods=["POST"])
@requires("super")
def remove(name):
    confirm = request.form.get("confirm", "").strip().lower()
    if confirm != (name or "").strip().lower():
        fail(_("Type the name of the LDAP domain to confirm its removal."))
        return redirect(url_for("directories.index"))
    attempt(lambda: g.rp.directories.remove(name, force=request.form.get("force") == "1"),
            "LDAP domain removed. Run a deploy to stop authenticating against it.")
    return redirect(url_for("directories.index"))


@bp.route("/<name>/test", methods=["POST"])
@requires("global")
def test(name):
    try:
        report = g.rp.directories.test(name, sample=5)
    except RuPostError as exc:
        report = {"name": name, "ok": False, "error": str(exc), "servers": [], "bind": False, "base_dn": False,
                  "users": []}
    return _index(report=report)


def _job_on(name: str, kind: str, run):
    """Start `run(rp, directory, progress)` as a background job for the LDAP domain `name`
    (its job page next), or say it does not exist."""
    if not attempt(lambda: g.rp.directories.show(name)):
        return redirect(url_for("directories.index"))
    directory = g.rp.directories.show(name)["name"]
    job_id = jobs.submit(g.rp, kind, lambda rp, progress: run(rp, directory, progress))
    return redirect(url_for("jobs.show", job_id=job_id))


@bp.route("/<name>/sync", methods=["POST"])
@requires("super")
def sync(name):
    def work(rp, directory, progress):
        progress(5, f"reading the users of LDAP domain {directory}")
        r = rp.directories.sync(directory)
        return {"result": (f"{r['name']}: {r['seen']} user(s) seen, {r['created']} created, {r['renamed']} renamed, "
                           f"{r['disabled']} disabled, {r['enabled']} re-enabled, {r['deleted']} gone, "
                           f"{r['aliases_added']}/{r['aliases_removed']} alias(es) added/removed, "
                           f"{r['conflicts']} conflict(s)"),
                "steps": [{"step": "problem", "ok": False, "detail": p} for p in r.get("problems", [])[:50]]}

    return _job_on(name, "ldap-sync", work)


# ---------------------------------------------------------------- write-back (guide §7.5)
@bp.route("/<name>/writeback/set", methods=["POST"])
@requires("super")
def writeback_set(name):
    form = request.form
    enabled = form.get("enabled") == "1"
    attempt(lambda: g.rp.directories.writeback_set(
        name, enabled=enabled, pattern=form.get("pattern", "")[:128], mail_domain=form.get("mail_domain", "")[:253],
        bind_dn=form.get("bind_dn", "")[:2000], bind_password=form.get("bind_password", "")[:1000]),
        "Write-back saved." if enabled else "Write-back turned off.")
    return redirect(url_for("directories.edit", name=name) + "#writeback")


@bp.route("/<name>/writeback/plan", methods=["POST"])
@requires("super")
def writeback_plan(name):
    """The dry run: what the write-back would add and remove per entry, and what it skips."""
    try:
        current = g.rp.directories.show(name)
        plan = g.rp.directories.writeback(current["name"], dry_run=True)["planned"]
    except RuPostError as exc:
        fail(str(exc))
        return redirect(url_for("directories.edit", name=name) + "#writeback")
    return render("directory_edit.html", d=current, ca_pem=g.rp.directories.get_settings(name).ca_pem,
                  kinds=KINDS, securities=SECURITY, plan=plan)


@bp.route("/<name>/writeback/run", methods=["POST"])
@requires("super")
def writeback_run(name):
    def work(rp, directory, progress):
        progress(5, f"reading the accounts of LDAP domain {directory}")
        r = rp.directories.writeback(directory)
        steps = [{"step": item["dn"], "ok": "skipped" not in item,
                  "detail": f"{item['mail']}: {item['skipped']}" if "skipped" in item else
                  "; ".join([f"+ {a}" for a in item["add"]] + [f"- {x}" for x in item["remove"]])}
                 for item in r["planned"] if "skipped" in item or "changes" in item]
        return {"result": f"{r['name']}: {r['written']} entr(ies) written", "steps": steps[:200]}

    return _job_on(name, "ldap-writeback", work)


# ---------------------------------------------------------------- Kerberos single sign-on
@bp.route("/<name>/kerberos/set", methods=["POST"])
@requires("super")
def kerberos_set(name):
    upload = request.files.get("keytab")
    if upload is None or not upload.filename:
        fail(_("Choose the keytab file."))
        return redirect(url_for("directories.edit", name=name) + "#kerberos")
    keytab = upload.read(KEYTAB_MAX + 1)  # one byte more: the service names a keytab that is too large
    kdcs = request.form.get("kdcs", "")[:2000].replace(",", " ").split()
    attempt(lambda: g.rp.directories.kerberos_set(name, keytab, kdcs=kdcs),
            "Keytab checked and saved. Run a deploy to turn Kerberos single sign-on on.")
    return redirect(url_for("directories.edit", name=name) + "#kerberos")


@bp.route("/<name>/kerberos/off", methods=["POST"])
@requires("super")
def kerberos_off(name):
    attempt(lambda: g.rp.directories.kerberos_off(name),
            "Kerberos turned off. Run a deploy to stop accepting tickets.")
    return redirect(url_for("directories.edit", name=name) + "#kerberos")


# ---------------------------------------------------------------- named LDAP filters
@bp.route("/filters/add", methods=["POST"])
@requires("super")
def filter_add():
    form = request.form
    attempt(lambda: g.rp.ldap_filters.add(form.get("name", "")[:200], form.get("ldap_domain", "")[:200],
                                          form.get("filter", "")[:MAX_FILTER], form.get("description", "")[:1000]),
            "LDAP filter added.")
    return redirect(url_for("directories.index") + "#ldap-filters")


@bp.route("/filters/<fname>/set", methods=["POST"])
@requires("super")
def filter_set(fname):
    attempt(lambda: g.rp.ldap_filters.set_filter(fname, request.form.get("filter", "")[:MAX_FILTER]),
            "LDAP filter saved. The dynamic lists using it change at their next update.")
    return redirect(url_for("directories.index") + "#ldap-filters")


@bp.route("/filters/<fname>/remove", methods=["POST"])
@requires("super")
def filter_remove(fname):
    attempt(lambda: g.rp.ldap_filters.remove(fname), "LDAP filter removed.")
    return redirect(url_for("directories.index") + "#ldap-filters")


@bp.route("/filters/test", methods=["POST"])
@requires("global")
def filter_test():
    """Who a named filter (or a filter being written) matches now: reads the directory only."""
    form = request.form
    name = form.get("name", "").strip()[:200] or None
    directory = form.get("ldap_domain", "").strip()[:200] or None
    text = form.get("filter", "")[:MAX_FILTER].strip() or None
    try:
        result = g.rp.ldap_filters.test(name, ldap_domain=directory, text=text, limit=50)
    except RuPostError as exc:
        result = {"error": str(exc), "filter": text or name or "", "ldap_domain": directory or ""}
    return _index(preview=result)
