"""What every resource of the API shares: blueprints that turn service errors into
problem details, the role levels, pagination, ETags and idempotent creates."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from flask import Response, g, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from ..db.api_models import ApiIdempotency
from ..db.models import utcnow
from ..errors import RuPostError
from .problems import from_service_error, problem

PREFIX = "/api/v1"
LEVELS = ("any", "global", "super")


def blueprint(name: str, path: str, description: str) -> Blueprint:
    """A resource's blueprint under /api/v1; a service's refusal becomes its problem details."""
    bp = Blueprint(f"api_{name}", __name__, url_prefix=f"{PREFIX}{path}", description=description)
    bp.register_error_handler(RuPostError, from_service_error)
    return bp


def level(required: str) -> Callable:
    """Who may call a view, besides the token's role rules (readonly never changes anything):
    ``any`` token, ``global`` (node-wide data: not a domain administrator), ``super``."""
    assert required in LEVELS

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            token = g.token
            if required == "global" and token.role == "domain_admin":
                return problem(403, f"token {token.name} is a domain administrator's: node-wide data is not its")
            if required == "super" and token.role != "superadmin":
                return problem(403, f"token {token.name} is not a superadministrator's")
            return view(*args, **kwargs)

        return wrapper

    return decorate


# ---------------------------------------------------------------------------- pagination
class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(1, 1_000_000), metadata={"description": "From 1."})
    per_page = fields.Integer(load_default=50, validate=validate.Range(1, 500))


def page_schema(item: type[Schema], name: str) -> type[Schema]:
    """The envelope of one page of a list: ``items``, ``total`` matching, ``page``, ``per_page``."""
    return Schema.from_dict({"items": fields.List(fields.Nested(item), required=True),
                             "total": fields.Integer(required=True), "page": fields.Integer(required=True),
                             "per_page": fields.Integer(required=True)}, name=name)


def paged(result: dict, args: dict) -> dict:
    """A service's page (rows, total) in the envelope."""
    return {"items": result["rows"], "total": result["total"] or 0, "page": args["page"],
            "per_page": args["per_page"]}


def page_of(rows: Sequence[dict], args: dict) -> dict:
    """One page of a short list the service returns whole (distribution lists, jobs...)."""
    start = (args["page"] - 1) * args["per_page"]
    return {"items": list(rows[start:start + args["per_page"]]), "total": len(rows), "page": args["page"],
            "per_page": args["per_page"]}


def offset(args: dict) -> int:
    return (args["page"] - 1) * args["per_page"]


# ---------------------------------------------------------------------------- ETag / If-Match
def etag_of(item: dict) -> str:
    return '"' + hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:32] + '"'


def with_etag(item: dict) -> tuple[dict, dict]:
    return item, {"ETag": etag_of(item)}


def stale(current: dict) -> Response | None:
    """412 when the request's If-Match names another version than the current one: another
    administrator changed the object since the client read it. No If-Match: no check."""
    wanted = request.headers.get("If-Match")
    if wanted is None or wanted.strip() == "*":
        return None
    tags = [t.strip().removeprefix("W/") for t in wanted.split(",")]
    if etag_of(current) in tags:
        return None
    return problem(412, "the object was changed since you read it (its ETag differs from If-Match): "
                        "read it again and repeat the change", headers={"ETag": etag_of(current)})


# ---------------------------------------------------------------------------- Idempotency-Key
IDEMPOTENCY_SECONDS = 24 * 3600
IDEMPOTENCY_HEADER = {"Idempotency-Key": {"schema": {"type": "string", "maxLength": 255}, "required": False,
                                          "description": "A client's unique key: a create retried within a day "
                                                         "with the same key and body answers as the first one "
                                                         "did."}}


def idempotent(view):
    """A create sent again with the same ``Idempotency-Key`` (same token) gets the first answer
    back instead of a second object or a conflict; the same key with another request is 422."""
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        if not key.strip() or len(key) > 255:
            return problem(422, "Idempotency-Key must be 1 to 255 characters")
        fingerprint = hashlib.sha256(b"\0".join([request.method.encode(), request.path.encode(),
                                                 request.get_data()])).hexdigest()
        rp, token = g.rp, g.token.name
        with rp.dbs.session("main") as s:
            seen = s.get(ApiIdempotency, (token, key))
            if seen is not None:
                if seen.fingerprint != fingerprint:
                    return problem(422, "this Idempotency-Key was used for another request: use a new key")
                replay = Response(seen.body, status=seen.status, mimetype="application/json")
                if seen.location:
                    replay.headers["Location"] = seen.location
                replay.headers["Idempotent-Replayed"] = "true"
                return replay
        response = view(*args, **kwargs)
        if isinstance(response, Response) and 200 <= response.status_code < 300:
            from sqlalchemy import delete
            from sqlalchemy.dialects.postgresql import insert

            with rp.dbs.session("main") as s:
                # a key guards against retries, which come within minutes: answers are kept a day
                s.execute(delete(ApiIdempotency).where(
                    ApiIdempotency.created_at < utcnow() - dt.timedelta(seconds=IDEMPOTENCY_SECONDS)))
                s.execute(insert(ApiIdempotency).values(
                    token=token, key=key, fingerprint=fingerprint, status=response.status_code,
                    body=response.get_data(as_text=True), location=response.headers.get("Location", ""))
                    .on_conflict_do_nothing())
        return response

    return wrapper


def documented_headers(**extra: Any) -> dict:
    return {"parameters": [{"in": "header", "name": n, **spec} for n, spec in IDEMPOTENCY_HEADER.items()], **extra}


# ---------------------------------------------------------------------------- uploads
def with_text_files(texts: dict[str, str], call: Callable) -> Any:
    """Services read uploads (certificates, DH parameters) from files, the CLI's arguments:
    the texts go into a private temporary directory, under the names given here, for the
    length of `call(*paths)`."""
    with tempfile.TemporaryDirectory(prefix="rupost-api-upload-") as tmp:
        paths = []
        for name, text in texts.items():
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
                fh.write(text)
            paths.append(path)
        return call(*paths)
