"""The REST API (``/api/v1`` on the panel's port): a thin JSON face over rupost.services.

Built with flask-smorest: each resource is a module here with a blueprint ``bp`` of
MethodViews whose marshmallow schemas validate the input and shape the output, and the
OpenAPI 3.1 description (``/api/v1/openapi.json``) is generated from those same
decorators, so the description cannot drift from the code. ``install(app)`` mounts it in
the panel's Flask application (rupost.panel.create_app). Authentication is a bearer token
(rupost.services.api_tokens); every error is an RFC 9457 problem (problems.py).
"""
from __future__ import annotations

import http
import importlib

from flask import Flask, g, request
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from .. import __version__
from ..services import Actor
from . import problems
from .common import PREFIX
from .schemas import ProblemSchema

# the resources, in the order of the description: one module name per line
RESOURCES = [
    "domains",
    "mailboxes",
    "aliases",
    "antispam_lists",
    "distribution_lists",
    "shared_mailboxes",
    "sender_rights",
    "calendar_delegations",
    "groupware_migrations",
    "jobs",
    "audit",
    "operations",
    "monitoring",
    "ldap_domains",
    "administration",
    "integrations",
    "resources",
    "reports",
    "migrations",
    "maintenance",
]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
JSON_TYPES = ("application/json", "application/merge-patch+json")
PUBLIC = (f"{PREFIX}/openapi.json",)


class RuPostApi(Api):
    """flask-smorest's Api whose errors are problem details (application/problem+json)."""

    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self):
        # the panel keeps its HTML error pages; under /api/ every error is a problem (web._error_page)
        self._app.register_error_handler(HTTPException, _http_error)

    def _register_responses(self):
        for status in http.HTTPStatus:
            response: dict = {"description": status.phrase}
            if status >= 400:
                response["content"] = {problems.MEDIA_TYPE: {"schema": self.ERROR_SCHEMA}}
            self.spec.components.response(status.name, response, lazy=True)
        self.spec.components.response("DEFAULT_ERROR", {
            "description": "An RFC 9457 problem: 401 no valid token, 403 not allowed for the token's role or "
                           "domains, 404, 405, 409 conflict, 412 stale If-Match, 415 not JSON, 422 invalid input, "
                           "429 locked out after failed attempts.",
            "content": {problems.MEDIA_TYPE: {"schema": self.ERROR_SCHEMA}}}, lazy=True)


def _http_error(exc: HTTPException):
    if request.path.startswith("/api/"):
        return problems.from_http_exception(exc)
    return exc


def install(app: Flask) -> Api:
    app.config.update(
        API_TITLE="RuPost API", API_VERSION=__version__, OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX=PREFIX, OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Domains, mailboxes, aliases, distribution lists, LDAP filters, jobs, the "
                                    "audit journal, nodes, templates, deploys, certificates, security blocks, "
                                    "calendar resources, DKIM and DNS records, statistics, mail queues, "
                                    "monitoring thresholds, LDAP domains, checks, sizing, backups, impersonation "
                                    "accounts, push endpoints, monitor events, session peaks, SRS, the mail "
                                    "host, IMAP migrations, DH parameters, lockouts, the database cluster's state "
                                    "and queue evacuation of a RuPost installation. Authenticate with "
                                    "`Authorization: Bearer <token>` "
                                    "(`rupost api-tokens add`). Errors are RFC 9457 problem details."},
            "security": [{"bearer": []}],
            "servers": [{"url": "/"}],
        })
    api = RuPostApi(app)
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                                   "description": "A token from `rupost api-tokens add`."})
    for name in RESOURCES:
        api.register_blueprint(importlib.import_module(f".{name}", __name__).bp)
    app.before_request(authenticate)
    return api


def authenticate():
    """Every /api/v1 request but the description's: a valid bearer token, else 401 (counted
    towards the address's lockout: 429 once locked out); then the token's role rules."""
    if not request.path.startswith(PREFIX + "/") or request.path in PUBLIC:
        return None
    from flask import current_app

    from ..errors import RuPostError

    base = current_app.extensions["rupost"]
    address = request.remote_addr or "?"
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    try:
        token = base.as_actor(Actor("token:?", "api", address)).api_tokens.authenticate(
            secret.strip() if scheme.lower() == "bearer" else None, address)
    except RuPostError as exc:
        return problems.from_service_error(exc)
    g.token = token
    g.rp = base.as_actor(Actor(token.actor_login, "api", address, details={"token": token.name},
                               domains=token.domain_scope))
    if request.method not in SAFE_METHODS:
        if not token.can_write:
            return problems.problem(403, f"token {token.name} is read-only: it changes nothing")
        if request.content_length and request.mimetype not in JSON_TYPES:
            return problems.problem(415, f"send JSON (Content-Type: application/json), not {request.mimetype!r}")
    return None
