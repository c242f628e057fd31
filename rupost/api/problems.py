"""RFC 9457 problem details: the one shape of every error the API answers.

``{"type", "title", "status", "detail", "instance"}`` as ``application/problem+json``;
an input error adds ``errors`` (field -> messages, from the request schema). The ``type``
is a stable URI per kind of problem (``urn:rupost:problem:<kind>``) so scripts can branch
on it without parsing the English ``detail``.
"""
from __future__ import annotations

import json
from http import HTTPStatus

from flask import Response, request

from ..errors import ConflictError, DatabaseError, NotFoundError, PermissionDeniedError, RuPostError, ValidationError
from ..services.admins import AuthenticationError, LockedOutError

MEDIA_TYPE = "application/problem+json"

KINDS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
         409: "conflict", 412: "precondition-failed", 413: "too-large", 415: "unsupported-media-type",
         422: "invalid-input", 429: "locked-out", 500: "internal-error", 503: "unavailable"}


def problem(status: int, detail: str = "", errors: dict | None = None, headers: dict | None = None,
            kind: str | None = None) -> Response:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict = {"type": f"urn:rupost:problem:{kind or KINDS.get(status, str(status))}", "title": title,
                  "status": status, "detail": detail or title, "instance": request.path}
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body, default=str), status=status, mimetype=MEDIA_TYPE)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def status_of(exc: RuPostError) -> int:
    """The HTTP status of a service error: what the administrator's message means."""
    for kind, status in ((LockedOutError, 429), (AuthenticationError, 401), (PermissionDeniedError, 403),
                         (NotFoundError, 404), (ConflictError, 409), (ValidationError, 422),
                         (DatabaseError, 503)):
        if isinstance(exc, kind):
            return status
    return 409  # a refusal for the object's state (deploy running, last superadmin...): not the input's form


def from_service_error(exc: RuPostError) -> Response:
    status = status_of(exc)
    headers = {"WWW-Authenticate": 'Bearer realm="rupost"'} if status == 401 else None
    return problem(status, str(exc), headers=headers)


def from_http_exception(exc) -> Response:
    """A werkzeug HTTPException (routing, method, size) or webargs' 422 with its messages."""
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    errors = data.get("messages") if isinstance(data, dict) else None
    detail = data.get("message") if isinstance(data, dict) and data.get("message") else exc.description
    if errors:
        detail = "the request does not match the description: " + "; ".join(_flatten(errors))[:1500]
    headers = {}
    if status == 405 and getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    return problem(status, str(detail or ""), errors=errors if isinstance(errors, dict) else None, headers=headers)


def _flatten(errors, path: str = "") -> list[str]:
    if isinstance(errors, dict):
        out = []
        for key, value in errors.items():
            out += _flatten(value, f"{path}.{key}" if path else str(key))
        return out
    if isinstance(errors, list) and all(isinstance(e, str) for e in errors):
        return [f"{path}: {' '.join(errors)}" if path else " ".join(errors)]
    return [f"{path}: {errors}"]
