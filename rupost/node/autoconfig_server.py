"""The public autoconfiguration endpoints as a Flask blueprint, and a minimal app serving
only them (what `rupost autoconfig serve` runs behind nginx).

nginx proxies these paths of the web server (HTTPS 443 and plain HTTP 80, guide App.2) to
a unix socket of the core, ``<root>/run/rupost/autoconfig.sock``:

- ``GET /mail/config-v1.1.xml?emailaddress=...`` and
  ``GET /.well-known/autoconfig/mail/config-v1.1.xml``: Thunderbird/Evolution autoconfig;
- ``POST /autodiscover/autodiscover.xml`` (any case): Outlook autodiscover (POX);
- ``GET /mobileconfig?emailaddress=...``: Apple configuration profile.

The blueprint can be registered in any Flask app that puts a ``RuPost`` in
``app.extensions["rupost"]`` (the control panel may host it the same way).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, request

from rupost.errors import NotFoundError, RuPostError, ValidationError

bp = Blueprint("public_autoconfig", __name__)
log = logging.getLogger("rupost.autoconfig")


def _service():

    return current_app.extensions["rupost"].autoconfig


def _error(exc: RuPostError) -> Response:
    status = 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, ValidationError) else 503
    if status == 503:
        log.error("autoconfig: %s", exc)
        return Response("service unavailable\n", status=503, mimetype="text/plain")
    return Response(f"{exc}\n", status=status, mimetype="text/plain")


@bp.route("/mail/config-v1.1.xml", methods=["GET"])
@bp.route("/.well-known/autoconfig/mail/config-v1.1.xml", methods=["GET"])
def thunderbird():
    try:
        svc = _service()
        domain, _ = svc.domain_of(request.args.get("emailaddress"), request.host)
        body = svc.thunderbird(domain)
    except RuPostError as exc:
        return _error(exc)
    return Response(body, mimetype="application/xml", headers={"Cache-Control": "no-cache"})


@bp.route("/autodiscover/autodiscover.xml", methods=["GET", "POST"])
@bp.route("/Autodiscover/Autodiscover.xml", methods=["GET", "POST"])
@bp.route("/AutoDiscover/AutoDiscover.xml", methods=["GET", "POST"])
def autodiscover():  # other spellings are folded by create_app's case-folding wrapper
    if request.method != "POST":
        return Response("POST an Autodiscover request (EMailAddress)\n", status=405, mimetype="text/plain",
                        headers={"Allow": "POST"})
    from rupost.services.autoconfig import MAX_REQUEST_BYTES

    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        return Response("request too large\n", status=413, mimetype="text/plain")
    try:
        body = _service().autodiscover(request.get_data(cache=False)[:MAX_REQUEST_BYTES + 1])
    except RuPostError as exc:
        return _error(exc)
    return Response(body, mimetype="application/xml", headers={"Cache-Control": "no-cache"})


@bp.route("/mobileconfig", methods=["GET"])
def mobileconfig():
    try:
        email = request.args.get("emailaddress")
        if not email:
            raise ValidationError("no mail address given (?emailaddress=user@domain)")
        body = _service().mobileconfig(email)
    except RuPostError as exc:
        return _error(exc)
    return Response(body, mimetype="application/x-apple-aspen-config",
                    headers={"Content-Disposition": 'attachment; filename="mail.mobileconfig"',
                             "Cache-Control": "no-cache"})


def _fold_autodiscover_case(wsgi_app):
    """Outlook spells the path in any case (nginx matches it case-insensitively)."""

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO", "").lower() == "/autodiscover/autodiscover.xml":
            environ["PATH_INFO"] = "/autodiscover/autodiscover.xml"
        return wsgi_app(environ, start_response)

    return wrapped


def create_app(core) -> Flask:
    app = Flask("rupost.autoconfig")
    app.extensions["rupost"] = core
    app.config["MAX_CONTENT_LENGTH"] = 65536
    app.register_blueprint(bp)
    app.wsgi_app = _fold_autodiscover_case(app.wsgi_app)  # type: ignore[method-assign]  # WSGI middleware
    return app


def default_socket(layout) -> Path:
    return layout.run / "autoconfig.sock"


def serve(core, socket_path: str | None = None, bind: str | None = None) -> None:
    """Serve the endpoints on a unix socket (what nginx proxies to) or on HOST:PORT."""
    from werkzeug.serving import make_server

    app = create_app(core)
    if bind:
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit():
            raise ValidationError(f"--bind {bind!r}: expected HOST:PORT")
        server = make_server(host.strip("[]"), int(port), app, threaded=True)
    else:
        path = Path(socket_path) if socket_path else default_socket(core.layout)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()
        server = make_server(f"unix://{path}", 0, app, threaded=True)
        # nginx's workers run unprivileged: they must be able to connect
        os.chmod(path, 0o666)
    try:
        server.serve_forever()
    finally:
        server.server_close()
