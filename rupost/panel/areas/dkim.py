"""A domain's DKIM key and the DNS records it needs (MX, SPF, DKIM, DMARC, autoconfiguration,
SRV), with generating and rotating the key (`rupost domains dkim|dns`). Domain administrators
see and change their own domains'."""
from __future__ import annotations

from flask import Blueprint, abort, g, redirect, request, url_for

from ...errors import NotFoundError, RuPostError
from ..web import attempt, check_domain, render, requires

bp = Blueprint("dkim", __name__, url_prefix="/domains")
NAV = None  # reached from the domains page


@bp.route("/<name>/dns")
@requires("any")
def show(name, check=None, nameserver=""):
    check_domain(name)
    records = g.rp.dns_records.records(name)
    try:
        key = g.rp.dkim.show(name)
    except NotFoundError:
        key = None
    return render("dkim.html", domain=records["domain"], key=key, records=records, check=check,
                  nameserver=nameserver)


@bp.route("/<name>/dns/check", methods=["POST"])
@requires("any")
def check(name):
    """Ask DNS (the node's resolver, or a name server given as IP[:PORT]) whether the records are
    published (`rupost domains check`): it reads, so read-only administrators may too."""
    check_domain(name)
    nameserver = request.form.get("nameserver", "").strip()[:64]
    try:
        result = g.rp.dns_records.check(name, nameserver or None, timeout=5.0)
    except RuPostError as exc:
        result = {"error": str(exc)}
    return show(name, check=result, nameserver=nameserver)


@bp.route("/<name>/dkim/<action>", methods=["POST"])
@requires("write")
def change(name, action):
    check_domain(name, write=True)
    selector = request.form.get("selector", "").strip()[:63] or None
    if action == "generate":
        attempt(lambda: g.rp.dkim.generate(name, selector), "DKIM key generated: publish its TXT record.")
    elif action == "rotate":
        attempt(lambda: g.rp.dkim.rotate(name, selector),
                "DKIM key rotated: publish the new TXT record; keep the previous one until mail signed with it "
                "is delivered.")
    else:
        abort(404)
    return redirect(url_for("dkim.show", name=name))
