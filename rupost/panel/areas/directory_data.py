"""An LDAP domain's page: the accounts its sync knows (by state), the global address list the
directories give (searchable), and the sync's safety share: how large a share of a
directory's accounts or a dynamic list's members one run may drop before it is refused
(`rupost ldap-domains accounts|gal|max-drop-share`). Node-wide like the directories page:
domain administrators get 403; only superadministrators change the share."""
from __future__ import annotations

from flask import Blueprint, g, redirect, request, url_for

from ...errors import RuPostError
from ..web import attempt, fail, render, requires

bp = Blueprint("directory_data", __name__, url_prefix="/directories")
NAV = None  # reached from the directories page
STATES = ("active", "disabled", "deleted", "conflict")
SHOWN = 500  # rows of a table; the CLI and the API list them whole


@bp.route("/<name>/accounts")
@requires("global")
def show(name):
    rp = g.rp
    try:
        directory = rp.directories.show(name)
    except RuPostError as exc:
        fail(str(exc))
        return redirect(url_for("directories.index"))
    state = request.args.get("state", "")
    state = state if state in STATES else ""
    search = request.args.get("search", "").strip()[:200]
    return render("directory_data.html", d=directory, state=state, states=STATES, search=search, shown=SHOWN,
                  accounts=rp.directories.accounts(directory["name"], state or None, limit=SHOWN),
                  gal=rp.directories.gal(search, limit=SHOWN), share=rp.directories.max_drop_share())


@bp.route("/max-drop-share", methods=["POST"])
@requires("super")
def max_drop_share():
    raw = request.form.get("share_percent", "").strip()[:12]
    try:
        share = float(raw) / 100
    except ValueError:
        share = -1.0  # refused by the service with its own message
    attempt(lambda: g.rp.directories.set_max_drop_share(share), "Safety share saved.")
    back = request.form.get("directory", "")[:200]
    return redirect(url_for("directory_data.show", name=back) if back else url_for("directories.index"))
