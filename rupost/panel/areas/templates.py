"""Configuration templates and deploys: list, view, validate, import, activate, parameters,
plan with the diff, deploy and rollback in the background, history."""
from __future__ import annotations

import json

from flask import Blueprint, Response, abort, g, redirect, request, url_for

from ...errors import RuPostError
from .. import jobs
from ..web import attempt, fail, render, requires

bp = Blueprint("templates", __name__, url_prefix="/templates")
NAV = ("Templates and deploys", "templates.index", "global")
MAX_TEMPLATE = 1024 * 1024


def _uploaded_text() -> tuple[str | None, str]:
    """The template from the file field or the text area (never read from a client-named path)."""
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        data = upload.read(MAX_TEMPLATE + 1)
        if len(data) > MAX_TEMPLATE:
            return None, "the template file is larger than 1 MiB"
        try:
            return data.decode("utf-8"), ""
        except UnicodeDecodeError:
            return None, "the template file is not UTF-8 text"
    text = request.form.get("text", "")
    return (text, "") if text.strip() else (None, "paste a template or choose a file")


@bp.route("/")
@requires("global")
def index():
    rp = g.rp
    try:
        parameters = rp.templates.parameters()
    except RuPostError as exc:
        parameters = []
        fail(str(exc))
    for p in parameters:  # shown in YAML/JSON syntax, as the form takes it back (autoescaped as text)
        for key in ("value", "default"):
            value = p[key]
            p[f"{key}_shown"] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return render("templates.html", templates=rp.templates.list(), parameters=parameters,
                  history=rp.deploys.history(20), jobs=jobs.recent(rp, 5))


@bp.route("/view/<name>/<version>")
@requires("global")
def view(name, version):
    try:
        template = g.rp.templates.show(name, version)
    except RuPostError:
        abort(404)
    refs = [f"{o['name']}@{o['version']}" for o in g.rp.templates.list()]
    return render("template.html", t=template, refs=refs)


@bp.route("/export/<name>/<version>")
@requires("global")
def export(name, version):
    """The template's YAML as a file (`rupost template export`), to edit and import as a new version."""
    try:
        body = g.rp.templates.export(name, version)
    except RuPostError:
        abort(404)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{name}-{version}")
    return Response(body, mimetype="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="{safe}.yaml"'})


@bp.route("/diff")
@requires("global")
def diff():
    """A unified diff of two templates' full documents (`rupost template diff A B`)."""
    a, b = request.args.get("a", "")[:200], request.args.get("b", "")[:200]
    try:
        text, error = g.rp.templates.diff(a, b), None
    except RuPostError as exc:
        text, error = "", str(exc)
    return render("template_diff.html", a=a, b=b, diff=text, error=error), 200 if error is None else 404


@bp.route("/validate", methods=["POST"])
@requires("global")
def validate():
    text, problem = _uploaded_text()
    if text is None:
        fail(problem)
        return redirect(url_for("templates.index"))
    try:
        doc = g.rp.templates.validate(text, "uploaded template")
    except RuPostError as exc:
        return render("template_check.html", ok=False, message=str(exc), text=text)
    return render("template_check.html", ok=True, message=f"{doc.name}@{doc.version}", text=text)


@bp.route("/import", methods=["POST"])
@requires("super")
def import_template():
    text, problem = _uploaded_text()
    if text is None:
        fail(problem)
    else:
        attempt(lambda: g.rp.templates.import_text(text, "uploaded template"),
                "Template {result[name]}@{result[version]} imported.")
    return redirect(url_for("templates.index"))


@bp.route("/activate", methods=["POST"])
@requires("super")
def activate():
    attempt(lambda: g.rp.templates.activate(request.form.get("name", ""), request.form.get("version") or None),
            "Template activated: plan and deploy to apply it.")
    return redirect(url_for("templates.index"))


@bp.route("/remove", methods=["POST"])
@requires("super")
def remove():
    attempt(lambda: g.rp.templates.remove(request.form.get("name", ""), request.form.get("version") or None),
            "Template removed.")
    return redirect(url_for("templates.index"))


@bp.route("/parameters", methods=["POST"])
@requires("super")
def parameters():
    import yaml

    name = request.form.get("name", "")
    if request.form.get("unset") == "1":
        attempt(lambda: g.rp.templates.set_parameters({}, [name]), "Parameter reset to its default.")
        return redirect(url_for("templates.index"))
    raw = request.form.get("value", "")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        fail(f"{name}: the value is not valid YAML: {str(exc).splitlines()[0]}")
        return redirect(url_for("templates.index"))
    attempt(lambda: g.rp.templates.set_parameters({name: value}), "Parameter saved: plan and deploy to apply it.")
    return redirect(url_for("templates.index"))


@bp.route("/plan")
@requires("global")
def plan():
    rp = g.rp
    try:
        the_plan = rp.deploys.plan(check=True)
        drift = rp.deploys.drift()
    except RuPostError as exc:
        return render("plan.html", error=str(exc), plan=None, drift=[])
    return render("plan.html", error=None, plan=the_plan, drift=drift)


@bp.route("/deploy", methods=["POST"])
@requires("super")
def deploy():
    work = jobs.deploy_work(force=request.form.get("force") == "1", expected=request.form.get("plan") or None)
    job_id = jobs.submit(g.rp, "deploy", work)
    return redirect(url_for("jobs.show", job_id=job_id))


@bp.route("/rollback", methods=["POST"])
@requires("super")
def rollback():
    raw = request.form.get("generation", "").strip()
    if raw and not raw.isdigit():
        fail(f"{raw[:20]!r} is not a generation number")
        return redirect(url_for("templates.index"))
    job_id = jobs.submit(g.rp, "rollback", jobs.rollback_work(int(raw) if raw else None))
    return redirect(url_for("jobs.show", job_id=job_id))
