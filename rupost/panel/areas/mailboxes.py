"""Mailboxes: paginated list sorted and searched in SQL, create, quota, disable, password, remove, import."""
from __future__ import annotations

import io

from flask import Blueprint, abort, g, redirect, request, url_for

from ...errors import RuPostError
from ..web import attempt, check_address, check_domain, fail, page_args, render, requires

bp = Blueprint("mailboxes", __name__, url_prefix="/mailboxes")
NAV = ("Mailboxes", "mailboxes.index", "any")


class _Upload(io.StringIO):
    """An uploaded CSV as a text stream, named for messages (never by the client's file name)."""

    name = "uploaded CSV"


def _size_text(size: int) -> str:
    """A quota as the administrator types it (2G, 500M), bytes when it is not a round size."""
    for unit, suffix in ((1024 ** 4, "T"), (1024 ** 3, "G"), (1024 ** 2, "M"), (1024, "K")):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _scope(domain: str) -> list[str] | None:
    scope = g.admin.domain_scope
    if domain:
        check_domain(domain)
        return [domain]
    return scope


@bp.route("/")
@requires("any")
def index():
    page, size = page_args()
    search = request.args.get("q", "")[:200]
    domain = request.args.get("domain", "")[:253]
    sort = request.args.get("sort", "address")
    if sort not in g.rp.mailboxes.PAGE_SORTS:
        sort = "address"
    descending = request.args.get("order") == "desc"
    result = g.rp.mailboxes.page(search or None, _scope(domain), sort, descending, size, (page - 1) * size)
    domains = g.rp.domains.page(None, g.admin.domain_scope, limit=500, with_counts=False)["rows"]
    return render("mailboxes.html", result=result, page=page, size=size, q=search, domain=domain, sort=sort,
                  order="desc" if descending else "asc", domains=domains)


@bp.route("/add", methods=["POST"])
@requires("write")
def add():
    address = request.form.get("address", "").strip()
    check_address(address, write=True)
    password = request.form.get("password", "")
    if password != request.form.get("password2", password):
        fail("the two passwords differ")
        return redirect(url_for("mailboxes.index"))
    ok = attempt(lambda: g.rp.mailboxes.add(address, password, request.form.get("quota", "0").strip() or "0",
                                            request.form.get("name", "")[:256]), "Mailbox created.")
    return redirect(url_for("mailboxes.show", address=address.lower()) if ok else url_for("mailboxes.index"))


@bp.route("/<address>")
@requires("any")
def show(address):
    check_address(address)
    try:
        mailbox = g.rp.mailboxes.show(address)
    except RuPostError:
        abort(404)
    mailbox["quota_text"] = _size_text(mailbox["quota_bytes"])
    aliases = g.rp.aliases.page(mailbox["address"], g.admin.domain_scope, limit=100)["rows"]
    aliases = [a for a in aliases if mailbox["address"] in a["destinations"]]
    from .shared_mailboxes import rights_context

    return render("mailbox.html", m=mailbox, aliases=aliases, **rights_context(mailbox["address"]))


@bp.route("/<address>/<action>", methods=["POST"])
@requires("write")
def change(address, action):
    check_address(address, write=True)
    rp = g.rp
    if action == "quota":
        attempt(lambda: rp.mailboxes.set_quota(address, request.form.get("quota", "").strip()), "Quota changed.")
    elif action == "disable":
        attempt(lambda: rp.mailboxes.set_enabled(address, False), "Mailbox disabled.")
    elif action == "enable":
        attempt(lambda: rp.mailboxes.set_enabled(address, True), "Mailbox enabled.")
    elif action == "password":
        password = request.form.get("password", "")
        if password != request.form.get("password2", ""):
            fail("the two passwords differ")
        else:
            attempt(lambda: rp.mailboxes.set_password(address, password), "Password changed.")
    elif action == "remove":
        if attempt(lambda: rp.mailboxes.remove(address), "Mailbox removed; its stored mail stays on disk."):
            return redirect(url_for("mailboxes.index"))
    else:
        abort(404)
    return redirect(url_for("mailboxes.show", address=address))


@bp.route("/import", methods=["POST"])
@requires("super")
def import_csv():
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        fail("choose a CSV file to import")
        return redirect(url_for("mailboxes.index"))
    data = upload.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(f"the file is not UTF-8 text (byte {exc.start}): save it as UTF-8 CSV")
        return redirect(url_for("mailboxes.index"))
    check_only = request.form.get("check") == "1"
    attempt(lambda: g.rp.mailboxes.import_csv(_Upload(text, newline=""), check_only=check_only),
            "{result[checked]} row(s) checked, {result[imported]} mailbox(es) imported.")
    return redirect(url_for("mailboxes.index"))
