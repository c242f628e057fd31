"""Login, logout, language, the administrator's own account (password, TOTP)."""
from __future__ import annotations

import secrets
import time

from flask import Blueprint, abort, flash, g, redirect, request, session, url_for

from ...errors import RuPostError
from ...services.admins import AuthenticationError, AuthenticationUnavailable, LockedOutError
from ..i18n import LANGUAGES
from ..i18n import gettext as _
from ..web import attempt, client_address, render, requires

bp = Blueprint("auth", __name__)
NAV = None


def _safe_next(target: str | None) -> str:
    # only a path of this panel: never an absolute or scheme-relative URL (open redirect)
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if g.admin is not None:
            return redirect(url_for("dashboard.index"))
        return render("login.html", next=request.args.get("next", ""))
    login_name = request.form.get("login", "")
    try:
        identity = g.rp.admins.login(login_name, request.form.get("password", ""), client_address(),
                                     request.form.get("totp", "") or None)
    except AuthenticationError as exc:
        if isinstance(exc, LockedOutError):
            flash(_("Too many failed logins: try again later."), "error")
            status = 429
        elif isinstance(exc, AuthenticationUnavailable):
            flash(_("The password could not be checked now (directory unreachable); try again later."), "error")
            status = 503
        else:
            flash(_("Wrong login, password or code."), "error")
            status = 401
        return render("login.html", next=request.form.get("next", ""), login=login_name[:128]), status
    lang = session.get("lang")
    session.clear()
    now = time.time()
    session.update(login=identity.login, started=now, seen=now, csrf=secrets.token_urlsafe(32))
    session.permanent = True
    if lang in LANGUAGES and lang != identity.language:
        g.rp.admins.set_language(identity.login, lang)
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/logout", methods=["POST"])
def logout():
    if g.admin is not None:
        g.rp.admins.logout(g.admin.login, client_address())
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/language", methods=["POST"])
def language():
    lang = request.form.get("lang", "")
    if lang not in LANGUAGES:
        abort(400)
    session["lang"] = lang
    if g.admin is not None:
        g.rp.admins.set_language(g.admin.login, lang)
        return redirect(request.referrer if request.referrer and request.referrer.startswith(request.host_url)
                        else url_for("dashboard.index"))
    return redirect(url_for("auth.login"))


@bp.route("/account", methods=["GET", "POST"])
@requires("any")
def account():
    admin = g.admin
    if request.method == "POST":
        what = request.form.get("action")
        if what == "password":
            if admin.source != "local":
                abort(403)
            if request.form.get("new", "") != request.form.get("again", ""):
                flash(_("The two new passwords differ."), "error")
            else:
                if attempt(lambda: g.rp.admins.change_own_password(admin.login, request.form.get("current", ""),
                                                                   request.form.get("new", "")), "Password changed."):
                    session["started"] = time.time()  # the other sessions end, this one goes on
        elif what == "totp-enable":
            attempt(lambda: g.rp.admins.enable_totp(admin.login, request.form.get("secret", ""),
                                                     request.form.get("code", "")),
                    "Second factor enabled: the login form now asks for a code.")
        elif what == "totp-disable":
            # the password and a current code: a stolen session alone cannot strip the factor
            attempt(lambda: g.rp.admins.remove_own_totp(admin.login, request.form.get("password", ""),
                                                         request.form.get("code", "")), "Second factor disabled.")
        else:
            abort(400)
        return redirect(url_for("auth.account"))
    secret = None if admin.totp else g.rp.admins.new_totp_secret()
    uri = g.rp.admins.totp_uri(admin.login, secret) if secret else None
    try:
        details = g.rp.admins.show(admin.login)
    except RuPostError:
        abort(404)
    return render("account.html", details=details, secret=secret, uri=uri)
