"""The RuPost control panel (SPEC §10): a Flask application over the service layer.

``create_app(app_services_or_root)`` builds it for a ``RuPost`` object (tests) or a
node root (``rupost panel serve`` under gunicorn). Every area is one module in
``rupost/panel/areas`` exposing a blueprint ``bp`` and a navigation entry ``NAV``; it
is switched on by one line in ``AREAS`` below. Views are thin: they check the
administrator's role, call ``rupost.services`` and render a Jinja2 template.
"""
from __future__ import annotations

import datetime as dt
import importlib

from flask import Flask

# the areas of the panel, in navigation order: one module name per line
AREAS = [
    "auth",
    "dashboard",
    "nodes",
    "templates",
    "jobs",
    "domains",
    "dkim",
    "mailboxes",
    "aliases",
    "antispam",
    "shared_mailboxes",
    "distribution_lists",
    "resources",
    "mailqueues",
    "directories",
    "directory_data",
    "migration",
    "certificates",
    "checks",
    "capacity",
    "security",
    "backups",
    "integrations",
    "audit",
    "admins",
    "api_tokens",
    "settings",
]

MAX_UPLOAD = 2 * 1024 * 1024  # template YAML, certificate, key, DH parameters, CSV of a few thousand rows


def create_app(app_services_or_root=None, *, secure_cookies: bool = True, authenticators=(),
               testing: bool = False) -> Flask:
    from ..services import RuPost
    from . import i18n, web

    services = (app_services_or_root if isinstance(app_services_or_root, RuPost)
                else RuPost.open(app_services_or_root, actor="panel"))
    # create what every request thread shares before the first request (engines, adapters, backend)
    for kind in ("main", "data", "logs"):
        services.dbs.engine(kind)
    for shared in ("adapters", "backend"):  # cached properties: built once, here
        getattr(services, shared)
    for authenticator in authenticators:
        services.admins.register_authenticator(authenticator)

    flask_app = Flask(__name__, static_folder="static", template_folder="templates")
    flask_app.config.update(
        SECRET_KEY=services.admins.secret_key(),
        SESSION_COOKIE_NAME="rupost_panel",
        SESSION_COOKIE_SECURE=secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),
        MAX_CONTENT_LENGTH=MAX_UPLOAD,
        TEMPLATES_AUTO_RELOAD=False,
        TESTING=testing,
    )
    flask_app.extensions["rupost"] = services
    flask_app.jinja_env.autoescape = True  # every template, whatever its file name
    web.install(flask_app)
    i18n.install(flask_app)
    navigation = []
    for name in AREAS:
        module = importlib.import_module(f".areas.{name}", __name__)
        flask_app.register_blueprint(module.bp)
        if getattr(module, "NAV", None):
            navigation.append(module.NAV)
    flask_app.config["RUPOST_NAVIGATION"] = navigation
    from .. import api

    api.install(flask_app)  # /api/v1 on the same port, over the same services (bearer tokens, no session)
    return flask_app
