"""Request plumbing shared by every area: who is logged in, CSRF, roles, audit, errors.

- Every request gets ``g.rp``: a view of the service layer whose actor is the
  logged-in administrator and whose audit records carry source ``panel`` and the
  client address, so everything done in the panel is journaled like the CLI.
- Every POST must carry the session's CSRF token (``csrf_token`` form field).
- ``@requires(level)`` guards a view: ``any`` (every logged-in administrator),
  ``global`` (not a domain administrator: node-wide pages), ``write`` (may change
  something: superadmin or domain admin; the view checks the domain), ``super``.
"""
from __future__ import annotations

import functools
import hmac
import secrets
import time

from flask import abort, flash, g, redirect, render_template, request, session, url_for

from ..errors import PermissionDeniedError, RuPostError
from ..services import Actor, Services

LEVELS = ("any", "global", "write", "super")


def services_for(base: Services, actor: str, address: str, domains: list[str] | None = None) -> Services:
    """The service layer acting as `actor` from the panel (audit source ``panel``, the client
    address in every record, a domain administrator's domains as the scope the services
    enforce), over the process's shared runtime."""
    scope = None if domains is None else frozenset(d.lower() for d in domains)
    return base.as_actor(Actor(actor, "panel", address, domains=scope))


def base_services():
    from flask import current_app

    return current_app.extensions["rupost"]


def client_address() -> str:
    return request.remote_addr or "?"


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def requires(level: str):
    assert level in LEVELS

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            admin = g.get("admin")
            if admin is None:
                return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
            if level == "global" and admin.role == "domain_admin":
                abort(403)
            if level == "write" and not admin.can_write:
                abort(403)
            if level == "super" and not admin.is_superadmin:
                abort(403)
            return view(*args, **kwargs)

        wrapper.panel_level = level
        return wrapper

    return decorate


def check_domain(name: str, write: bool = False) -> None:
    """403 unless the administrator may see (or change) this domain: domain scoping of every view."""
    admin = g.admin
    allowed = admin.may_change_domain(name) if write else admin.may_see_domain(name)
    if not allowed:
        abort(403)


def check_address(address: str, write: bool = False) -> str | None:
    """The domain part of an address the administrator may see or change (403 otherwise).
    An address that does not parse is 404 to look at; for a change it is let through to the
    service, which refuses it with its own message before changing anything."""
    from .. import validation

    try:
        _, domain = validation.address(address)
    except RuPostError:
        if write:
            return None
        abort(404)
    check_domain(domain, write)
    return domain


def attempt(action, success: str | None = None) -> bool:
    """Run a service call; flash its success or its error message. True when it succeeded."""
    from .i18n import gettext as _

    try:
        result = action()
    except PermissionDeniedError:
        raise  # outside the administrator's domains: the 403 page, as the view's own check gives
    except RuPostError as exc:
        flash(str(exc), "error")
        return False
    if success:
        flash(_(success).format(result=result) if "{result" in success else _(success), "ok")
    return True


def fail(message: str) -> None:
    """Show a problem found by the panel itself (the service layer's come through attempt)."""
    flash(message, "error")


def page_args(default_size: int = 50) -> tuple[int, int]:
    """(page, size) from the query string, bounded."""
    def number(name, default, low, high):
        try:
            return max(low, min(high, int(request.args.get(name, default))))
        except ValueError:
            return default

    return number("page", 1, 1, 10_000_000), number("size", default_size, 10, 200)


def render(template: str, **context):
    return render_template(template, **context)


def _session_expired(now: float) -> bool:
    timeout = base_services().admins.setting("panel.session_timeout_minutes") * 60
    seen = session.get("seen", 0)
    started = session.get("started", 0)
    return now - seen > timeout or now - started > 12 * 3600


def install(app) -> None:
    @app.before_request
    def load_administrator():
        g.admin = None
        base = base_services()
        address = client_address()
        g.rp = services_for(base, "anonymous", address)
        if request.endpoint == "static" or request.path.startswith("/api/"):
            return None  # the REST API authenticates with bearer tokens (rupost.api), not the session
        stored_key = base.admins.current_secret_key()
        if stored_key and stored_key != app.secret_key:
            # rotated (rupost panel rotate-session-key): sign with the new key from now on; the
            # cookie of this request was checked with the old one, so it opens nothing
            app.secret_key = stored_key
            session.clear()
            return redirect(url_for("auth.login"))
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.form.get("csrf_token", "")
            expected = session.get("csrf", "")
            if not expected or not sent or not hmac.compare_digest(sent, expected):
                return render_template("error.html", code=400,
                                       message="csrf"), 400
        login = session.get("login")
        if login:
            now = time.time()
            if _session_expired(now):
                g.rp.admins.logout(login, address, reason="session timeout")
                session.clear()
                from .i18n import gettext as _

                flash(_("Your session has expired; log in again."), "error")
                return redirect(url_for("auth.login"))
            admin = base.admins.identity(login)
            if admin is None or (admin.sessions_after and session.get("started", 0) < admin.sessions_after):
                # removed or disabled since it logged in, logged out elsewhere, or its password was reset
                session.clear()
                return redirect(url_for("auth.login"))
            session["seen"] = now
            g.admin = admin
            g.rp = services_for(base, admin.login, address, admin.domain_scope)
        return None

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.context_processor
    def panel_context():
        return {"admin": g.get("admin"),
                "navigation": [n for n in app.config.get("RUPOST_NAVIGATION", ())
                               if g.get("admin") is not None and _nav_visible(n, g.admin)]}

    app.jinja_env.globals["csrf_token"] = csrf_token  # a global: imported macros see it too
    for code in (400, 403, 404, 405, 413, 500):
        app.register_error_handler(code, functools.partial(_error_page, code))
    # the services' own domain scope, where a view did not check first
    app.register_error_handler(PermissionDeniedError, functools.partial(_error_page, 403))


def _nav_visible(entry, admin) -> bool:
    _, _, level = entry
    return not ((level == "global" and admin.role == "domain_admin") or (level == "super" and not admin.is_superadmin))


def _error_page(code, exc):
    if request.path.startswith("/api/"):  # the REST API answers problem details, never an HTML page
        from ..api import problems

        if isinstance(exc, RuPostError):
            return problems.from_service_error(exc)
        return problems.from_http_exception(exc)
    return render_template("error.html", code=code, message=str(code)), code
