"""Importing a template is running code on every node (issue 26): a superadministrator's
action whatever face asks, journaled with the raw snippets the template brings."""
from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner
from test_deploy_safety import CUSTOM

from rupost.cli import main as rupost
from rupost.errors import PermissionDeniedError
from rupost.panel.web import services_for

from .conftest import audit_rows, text


def _template(name: str) -> str:
    return CUSTOM.replace("name: corp", f"name: {name}").replace(
        "components:\n", "components:\n  dovecot:\n    extra: \"# raw dovecot text\"\n")


def _stored(node, name: str) -> bool:
    return any(t["name"] == name for t in node.app.templates.list())


def test_superadmin_imports_through_the_panel_and_the_snippets_are_journaled(superadmin, node):
    name = f"raw{uuid.uuid4().hex[:6]}"
    superadmin.post("/templates/import", {"text": _template(name)})
    assert _stored(node, name)
    (record,) = audit_rows(node, "template.import", f"{name}@1.0.0")
    assert record.source == "panel"
    assert record.details["raw_snippets"] == ["components.dovecot.extra", "components.postfix.extra.main"]
    assert len(record.details["sha256"]) == 64
    node.app.templates.remove(name, "1.0.0")


@pytest.mark.parametrize("role", ["readonly", "domain_admin"])
def test_no_other_role_imports_or_activates_whatever_face_asks(role, admin_factory, make_client, node, domain):
    login = admin_factory(role, [domain] if role == "domain_admin" else ())
    name = f"raw{uuid.uuid4().hex[:6]}"
    client = make_client()
    client.login(login)
    assert client.post("/templates/import", {"text": _template(name)}).status_code == 403
    # the service refuses too, should a view forget its check
    acting = services_for(node.app, login, "192.0.2.30", [domain] if role == "domain_admin" else None)
    with pytest.raises(PermissionDeniedError, match="importing a template: only a superadministrator"):
        acting.templates.import_text(_template(name))
    with pytest.raises(PermissionDeniedError, match="activating a template"):
        acting.templates.activate("standard")
    assert not _stored(node, name)
    assert not audit_rows(node, "template.import", f"{name}@1.0.0")


def test_cli_import_names_the_raw_snippets(node, tmp_path):
    name = f"raw{uuid.uuid4().hex[:6]}"
    path = tmp_path / "raw.yaml"
    path.write_text(_template(name))
    r = CliRunner().invoke(rupost, ["--root", str(node.root), "template", "import", str(path)])
    assert r.exit_code == 0, r.output
    assert "raw snippets" in r.output and "components.dovecot.extra, components.postfix.extra.main" in r.output
    (record,) = audit_rows(node, "template.import", f"{name}@1.0.0")
    assert record.source == "cli" and record.details["raw_snippets"] == [
        "components.dovecot.extra", "components.postfix.extra.main"]
    node.app.templates.remove(name, "1.0.0")


def test_a_template_without_snippets_is_journaled_with_none(superadmin, node):
    name = f"plain{uuid.uuid4().hex[:6]}"
    plain = CUSTOM.replace("name: corp", f"name: {name}").split("components:")[0]
    superadmin.post("/templates/import", {"text": plain})
    assert _stored(node, name), text(superadmin.get("/templates/"))[:3000]
    (record,) = audit_rows(node, "template.import", f"{name}@1.0.0")
    assert record.details["raw_snippets"] == []
    node.app.templates.remove(name, "1.0.0")
