"""Distribution lists: list, members, add a static list, add/remove static members, add a
dynamic list from a named LDAP filter, run the updater; LDAP filter preview.

Static lists belong to their mail domain: a domain administrator sees and changes the lists
of its domains. Named LDAP filters, dynamic lists and the updater are node-wide: superadmin
only (a read-only administrator sees them and may preview a filter, which changes nothing).
Every action calls ``rupost.services.distribution_lists`` (audited there)."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, request, url_for

from ...errors import RuPostError
from .. import jobs
from ..web import attempt, check_address, fail, page_args, render, requires

bp = Blueprint("distribution_lists", __name__, url_prefix="/lists")
NAV = ("Distribution lists", "distribution_lists.index", "any")
MAX_MEMBERS_TEXT = 200_000


def _members(text: str) -> list[str]:
    return [m for m in text[:MAX_MEMBERS_TEXT].replace(",", " ").split() if m]


def _lists(search: str) -> list[dict]:
    scope = g.admin.domain_scope
    rows = g.rp.distribution_lists.list() if scope is None else [
        r for d in scope for r in g.rp.distribution_lists.list(d)]
    if search:
        needle = search.lower()
        rows = [r for r in rows if needle in r["address"] or needle in (r["display_name"] or "").lower()
                or needle in (r["filter"] or "")]
    return sorted(rows, key=lambda r: r["address"])


def _index(preview=None, status=200):
    page, size = page_args()
    search = request.values.get("q", "")[:200].strip() if request.method == "GET" else ""
    rows = _lists(search)
    filters, directories = [], []
    if g.admin.domain_scope is None:
        filters = g.rp.ldap_filters.list()
        directories = [d["name"] for d in g.rp.directories.list()]
    return render("distribution_lists.html", rows=rows[(page - 1) * size: page * size], total=len(rows),
                  page=page, size=size, q=search, filters=filters, directories=directories,
                  preview=preview), status


@bp.route("/")
@requires("any")
def index():
    return _index()


@bp.route("/show/<address>")
@requires("any")
def show(address):
    check_address(address)
    try:
        data = g.rp.distribution_lists.show(address)
    except RuPostError as exc:
        fail(str(exc))
        return redirect(url_for("distribution_lists.index"))
    return render("distribution_list.html", l=data)


@bp.route("/add", methods=["POST"])
@requires("write")
def add():
    address = request.form.get("address", "").strip()
    filter_name = request.form.get("filter", "").strip() or None
    if filter_name and not g.admin.is_superadmin:
        abort(403)  # dynamic lists read the directory: node-wide
    check_address(address, write=True)
    ok = attempt(lambda: g.rp.distribution_lists.add(
        address, members=_members(request.form.get("members", "")), filter_name=filter_name,
        sender_policy=request.form.get("sender_policy", "anyone"),
        display_name=request.form.get("display_name", "")[:256]), "Distribution list added.")
    if ok:
        return redirect(url_for("distribution_lists.show", address=address.lower()))
    return redirect(url_for("distribution_lists.index"))


@bp.route("/<address>/members/<action>", methods=["POST"])
@requires("write")
def members(address, action):
    check_address(address, write=True)
    wanted = _members(request.form.get("members", ""))
    if action == "add":
        attempt(lambda: g.rp.distribution_lists.add_members(address, wanted), "Members added: {result}.")
    elif action == "remove":
        attempt(lambda: g.rp.distribution_lists.remove_members(address, wanted), "Members removed: {result}.")
    else:
        abort(404)
    return redirect(url_for("distribution_lists.show", address=address))


@bp.route("/<address>/remove", methods=["POST"])
@requires("write")
def remove(address):
    check_address(address, write=True)
    attempt(lambda: g.rp.distribution_lists.remove(address), "Distribution list removed.")
    return redirect(url_for("distribution_lists.index"))


@bp.route("/update", methods=["POST"])
@requires("super")
def update():
    address = request.form.get("address", "").strip() or None
    if address and not attempt(lambda: g.rp.distribution_lists.show(address)):
        return redirect(url_for("distribution_lists.index"))

    def work(rp, progress):
        progress(5, f"asking the directories for the members of {address or 'every dynamic list'}")
        results = rp.distribution_lists.update(address)
        problems = [f"{r['address']}: {r['status']}: {r['error']}" for r in results if r.get("error")]
        if problems:
            raise RuPostError("\n".join(problems))
        return {"result": ", ".join(f"{r['address']}: {r['status']} ({r.get('members', 0)} member(s), "
                                    f"+{r.get('added', 0)} -{r.get('dropped', 0)})" for r in results)
                or "no dynamic lists"}

    job_id = jobs.submit(g.rp, "lists-update", work)
    return redirect(url_for("jobs.show", job_id=job_id))


@bp.route("/preview", methods=["POST"])
@requires("global")
def preview():
    """Who a named filter (or a filter being written) matches now: reads the directory only."""
    name = request.form.get("name", "").strip() or None
    directory = request.form.get("ldap_domain", "").strip() or None
    text = request.form.get("filter", "")[:4000].strip() or None
    try:
        result = g.rp.ldap_filters.test(name, ldap_domain=directory, text=text, limit=50)
    except RuPostError as exc:
        result = {"error": str(exc), "filter": text or name or "", "ldap_domain": directory or ""}
    return _index(preview=result)


@bp.route("/filters/add", methods=["POST"])
@requires("super")
def add_filter():
    attempt(lambda: g.rp.ldap_filters.add(request.form.get("name", ""), request.form.get("ldap_domain", ""),
                                          request.form.get("filter", "")[:4000],
                                          request.form.get("description", "")[:1000]), "LDAP filter added.")
    return redirect(url_for("distribution_lists.index"))
