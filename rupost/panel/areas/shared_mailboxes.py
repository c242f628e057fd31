"""Shared mailboxes and the rights on mailboxes: members of a shared mailbox, send-as and
send-on-behalf grants, delegated calendars (the last two shown on every mailbox's page)."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, request, url_for

from ...errors import RuPostError
from ...services.shared_mailboxes import RIGHTS
from ..web import attempt, check_address, render, requires

bp = Blueprint("shared_mailboxes", __name__, url_prefix="/shared-mailboxes")
NAV = ("Shared mailboxes", "shared_mailboxes.index", "any")


@bp.route("/")
@requires("any")
def index():
    return render("shared_mailboxes.html", rows=g.rp.shared_mailboxes.list())


@bp.route("/add", methods=["POST"])
@requires("write")
def add():
    address = request.form.get("address", "").strip()
    check_address(address, write=True)
    if attempt(lambda: g.rp.shared_mailboxes.add(address, display_name=request.form.get("name", ""),
                                                  quota=request.form.get("quota", "0") or "0"),
               "Shared mailbox added."):
        return redirect(url_for("shared_mailboxes.show", address=address.lower()))
    return redirect(url_for("shared_mailboxes.index"))


@bp.route("/<address>")
@requires("any")
def show(address):
    check_address(address)
    try:
        shared = g.rp.shared_mailboxes.show(address)
    except RuPostError:
        abort(404)
    return render("shared_mailbox.html", s=shared, rights=list(RIGHTS), **rights_context(shared["address"]))


@bp.route("/<address>/members", methods=["POST"])
@requires("write")
def member(address):
    check_address(address, write=True)
    who = request.form.get("member", "").strip()
    if request.form.get("remove"):
        attempt(lambda: g.rp.shared_mailboxes.remove_member(address, who), "Member removed.")
    else:
        chosen = [r for r in RIGHTS if request.form.get(f"right_{r}")]
        attempt(lambda: g.rp.shared_mailboxes.set_member(address, who, chosen), "Member rights saved.")
    return redirect(url_for("shared_mailboxes.show", address=address))


@bp.route("/<address>/remove", methods=["POST"])
@requires("write")
def remove(address):
    check_address(address, write=True)
    attempt(lambda: g.rp.shared_mailboxes.remove(address), "Shared mailbox removed.")
    return redirect(url_for("shared_mailboxes.index"))


# ---------------------------------------------------------------------- rights on any mailbox
def rights_context(address: str) -> dict:
    """What the rights section of a mailbox's page shows (the mailbox and shared mailbox pages)."""
    senders = g.rp.sender_rights.list(address)
    try:
        calendars = g.rp.calendar_delegations.list(address)
    except RuPostError:
        calendars = None  # SOGo has not started yet: nothing delegated
    return {"send_rights": senders, "calendar_delegations": calendars}


def _back(address: str):
    if request.form.get("back") == "shared":
        return redirect(url_for("shared_mailboxes.show", address=address))
    return redirect(url_for("mailboxes.show", address=address))


@bp.route("/rights/<address>/send", methods=["POST"])
@requires("write")
def send_right(address):
    check_address(address, write=True)
    grantee, kind = request.form.get("grantee", "").strip(), request.form.get("kind", "")
    if request.form.get("revoke"):
        attempt(lambda: g.rp.sender_rights.revoke(address, grantee, kind), "Right revoked.")
    else:
        attempt(lambda: g.rp.sender_rights.grant(address, grantee, kind), "Right granted.")
    return _back(address)


@bp.route("/rights/<address>/calendar", methods=["POST"])
@requires("write")
def calendar(address):
    check_address(address, write=True)
    delegate = request.form.get("delegate", "").strip()
    if request.form.get("revoke"):
        attempt(lambda: g.rp.calendar_delegations.revoke(address, delegate), "Delegation revoked.")
    else:
        attempt(lambda: g.rp.calendar_delegations.delegate(address, delegate, request.form.get("rights", "")),
                "Calendar delegated.")
    return _back(address)
