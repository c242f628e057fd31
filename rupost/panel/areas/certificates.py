"""Certificates and DH parameters: list with expiry, upload (validated), activate, remove."""
from __future__ import annotations

import os
import tempfile

from flask import Blueprint, abort, g, redirect, request, url_for

from ...errors import RuPostError
from ...services.certificates import MAX_FILE
from ..web import attempt, fail, render, requires

bp = Blueprint("certificates", __name__, url_prefix="/certificates")
NAV = ("Certificates", "certificates.index", "global")


def _with_uploads(fields: list[str], call):
    """Write the uploaded files into a private temporary directory under names chosen here
    (the client's file names are never used as paths), call `call(paths)`, then remove them."""
    blobs = {}
    for field in fields:
        upload = request.files.get(field)
        if upload is None or not upload.filename:
            fail(f"choose the {field.replace('_', ' ')}")
            return False
        data = upload.read(MAX_FILE + 1)
        if len(data) > MAX_FILE:
            fail(f"the {field.replace('_', ' ')} is larger than {MAX_FILE // 1024} KiB: not a PEM file")
            return False
        blobs[field] = data
    with tempfile.TemporaryDirectory(prefix="rupost-panel-upload-") as tmp:
        paths = {}
        for field, data in blobs.items():
            path = os.path.join(tmp, f"{field}.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            paths[field] = path
        return call(paths)


@bp.route("/")
@requires("global")
def index():
    certs, dh = g.rp.certificates, g.rp.dhparams
    return render("certificates.html", certificates=certs.list(), warnings=certs.expiry_warnings(),
                  dhparams=dh.list())


@bp.route("/show/<name>")
@requires("global")
def show(name):
    try:
        cert = g.rp.certificates.show(name)
    except RuPostError:
        abort(404)
    return render("certificate.html", c=cert)


@bp.route("/add", methods=["POST"])
@requires("super")
def add():
    name = request.form.get("name", "").strip()
    cert_type = request.form.get("type", "")
    activate = request.form.get("activate") == "1"
    _with_uploads(["certificate_file", "key_file"], lambda p: attempt(
        lambda: g.rp.certificates.add(name, cert_type, p["certificate_file"], p["key_file"],
                                             login=g.admin.login, activate=activate),
        "Certificate stored."))
    return redirect(url_for("certificates.index"))


@bp.route("/<action>", methods=["POST"])
@requires("super")
def change(action):
    name = request.form.get("name", "")
    certs, dh = g.rp.certificates, g.rp.dhparams
    if action == "activate":
        attempt(lambda: certs.activate(name), "Certificate activated.")
    elif action == "remove":
        attempt(lambda: certs.remove(name), "Certificate removed.")
    elif action == "regenerate":
        attempt(lambda: certs.regenerate_builtin(name), "Builtin certificate regenerated: deploy to apply it.")
    elif action == "dhparam-activate":
        attempt(lambda: dh.activate(name), "DH parameters activated: deploy to apply them.")
    elif action == "dhparam-remove":
        attempt(lambda: dh.remove(name), "DH parameters removed.")
    elif action == "dhparam-import":
        given = request.form.get("name", "").strip() or "uploaded-dhparam"
        _with_uploads(["dhparam_file"], lambda p: attempt(
            lambda: dh.import_file(p["dhparam_file"], given),
            "DH parameters imported and activated: deploy to apply them."))
    else:
        abort(404)
    return redirect(url_for("certificates.index"))
