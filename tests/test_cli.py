"""The rupost CLI on a deployed node: thin faces over the service layer."""
from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from rupost.cli import main as rupost


def cli(node, *args, input=None):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], input=input, catch_exceptions=False)


def test_domains_mailboxes_aliases_round_trip(node):
    domain = f"cli{uuid.uuid4().hex[:8]}.test"
    assert cli(node, "domains", "add", domain.upper()).exit_code == 0  # names are normalised
    r = cli(node, "mailboxes", "add", f"Ann@{domain}", "--password-stdin", "--quota", "2G", input="ann-password-1\n")
    assert r.exit_code == 0 and f"ann@{domain}" in r.output
    assert cli(node, "aliases", "add", f"sales@{domain}", f"ann@{domain}").exit_code == 0
    mailboxes = json.loads(cli(node, "mailboxes", "list", "--domain", domain, "--json").output)
    assert mailboxes == [{"address": f"ann@{domain}", "display_name": "", "quota_bytes": 2 * 1024 ** 3,
                          "enabled": True}]
    domains = {d["name"]: d for d in json.loads(cli(node, "domains", "list", "--json").output)}
    assert domains[domain]["mailboxes"] == 1 and domains[domain]["aliases"] == 1
    aliases = json.loads(cli(node, "aliases", "list", "--domain", domain, "--json").output)
    assert aliases[0]["destinations"] == [f"ann@{domain}"]
    r = cli(node, "domains", "remove", domain)
    assert r.exit_code == 1 and "still has 1 mailbox(es) and 1 alias(es)" in r.output
    assert cli(node, "aliases", "remove", f"sales@{domain}").exit_code == 0
    assert cli(node, "mailboxes", "remove", f"ann@{domain}").exit_code == 0
    assert cli(node, "domains", "remove", domain).exit_code == 0


@pytest.mark.parametrize("args, stdin, message", [
    (["domains", "add", "not a domain"], None, "'not a domain' is not a valid domain name"),
    (["domains", "add", "localhost"], None, "is not a valid domain name"),
    (["mailboxes", "add", "nobody-at-all", "--password-stdin"], "password-123\n", "is not a mail address"),
    (["mailboxes", "add", "x@unknown-domain.test", "--password-stdin"], "password-123\n",
     "domain unknown-domain.test does not exist"),
    (["mailboxes", "add", "x@{domain}", "--password-stdin"], "short\n", "password is too short"),
    (["mailboxes", "add", "x@{domain}", "--password-stdin", "--quota", "lots"], "password-123\n",
     "'lots' is not a size"),
    (["aliases", "add", "a@{domain}", "not-an-address"], None, "is not a mail address"),
    (["aliases", "add", "a@{domain}", "a@{domain}"], None, "cannot point to itself"),
    (["mailboxes", "remove", "ghost@{domain}"], None, "does not exist"),
    (["template", "show", "nonexistent"], None, "template nonexistent does not exist"),
    (["components", "start", "exim"], None, "unknown component(s): exim"),
])
def test_bad_input_gets_one_clear_line(node, domain, args, stdin, message):
    r = cli(node, *[a.replace("{domain}", domain) for a in args], input=stdin)
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert lines[-1].startswith("rupost: error: ") and message in lines[-1]


def test_duplicates_are_conflicts(node, domain):
    assert cli(node, "domains", "add", domain).output.startswith("rupost: error: domain")
    cli(node, "mailboxes", "add", f"dup@{domain}", "--password-stdin", input="password-123\n")
    r = cli(node, "mailboxes", "add", f"dup@{domain}", "--password-stdin", input="password-123\n")
    assert "mailbox dup@" in r.output and "already exists" in r.output
    r = cli(node, "aliases", "add", f"dup@{domain}", f"x@{domain}")
    assert "is already a mailbox" in r.output


def test_status_json_and_db_status(node):
    status = json.loads(cli(node, "status", "--json").output)
    assert all(c["running"] for c in status["components"].values())
    assert status["nodes"][0]["state"] == "in_service"
    db = json.loads(cli(node, "db", "status", "--json").output)
    assert [d["up_to_date"] for d in db["databases"]] == [True, True, True]
    assert db["ha"] is False and db["members"] == [] and db["reaches"]["core"].endswith(f":{node.config.database.port}")


def test_template_list_and_show(node):
    templates = json.loads(cli(node, "template", "list", "--json").output)
    assert {"name": "standard", "version": "1.0.0", "kind": "builtin", "active": True}.items() <= templates[0].items()
    assert "apiVersion: rupost/v1" in cli(node, "template", "show", "standard@1.0.0").output


def test_deploy_plan_without_changes(node):
    """--plan renders and runs every component's own checker, as a deploy would before its switch."""
    lines = cli(node, "deploy", "--plan").output.strip().splitlines()
    assert lines[0] == "no changes"
    assert lines[1] == "checked by: " + ", ".join(node.app.adapters)


def test_missing_config_is_explained(tmp_path):
    r = CliRunner().invoke(rupost, ["--root", str(tmp_path), "domains", "list"])
    assert r.exit_code == 1 and "run rupost-wizard first" in r.output


def test_template_parameters_are_validated_before_they_are_stored(node):
    before = node.app.settings.get("template_parameters")
    r = cli(node, "template", "set", "message_size_limit=tiny")
    assert r.exit_code == 1 and "parameters.message_size_limit: expected an integer, got 'tiny'" in r.output
    r = cli(node, "template", "set", "no_such=1")
    assert r.exit_code == 1 and "parameters.no_such: unknown parameter" in r.output
    r = cli(node, "template", "set", "sogo_workers=[2")
    assert r.exit_code == 2 and "sogo_workers: '[2' is not valid YAML" in r.output
    # a string parameter is taken as typed: "[host]:port" is not YAML, and junk is named
    r = cli(node, "template", "set", "relayhost=[10.0.0.1]:25 -o x")
    assert r.exit_code == 1 and "parameters.relayhost" in r.output and "does not match" in r.output
    assert node.app.settings.get("template_parameters") == before
    params = {p["name"]: p for p in json.loads(cli(node, "template", "parameters", "--json").output)}
    assert params["reject_unknown_sender_domain"]["value"] is False and params["reject_unknown_sender_domain"]["set"]
    assert params["message_size_limit"]["value"] == 52428800


def test_template_set_returns_a_parameter_to_its_default_with_unset_alone(node):
    before = node.app.settings.get("template_parameters")
    assert cli(node, "template", "set", "sogo_workers=2").exit_code == 0
    r = cli(node, "template", "set", "--unset", "sogo_workers")  # no NAME=VALUE with it
    assert r.exit_code == 0, r.output
    assert node.app.settings.get("template_parameters") == before
    r = cli(node, "template", "set")
    assert r.exit_code == 2 and "name at least one NAME=VALUE or --unset NAME" in r.output


def test_template_import_validate_export_remove_from_files(node, tmp_path):
    from test_deploy_safety import CUSTOM

    path = tmp_path / "corp.yaml"
    path.write_text(CUSTOM.replace("name: corp", "name: corpcli"))
    assert "corpcli@1.0.0 is valid (extends standard@1.0.0)" in cli(node, "template", "validate", str(path)).output
    assert cli(node, "template", "import", str(path)).exit_code == 0
    r = cli(node, "template", "import", str(path))
    assert r.exit_code == 1 and "versions are immutable" in r.output
    out = tmp_path / "out.yaml"
    assert cli(node, "template", "export", "corpcli@1.0.0", "-o", str(out)).exit_code == 0
    assert out.read_text() == path.read_text()
    assert "+    default: 20971520" in cli(node, "template", "diff", "standard", "corpcli").output
    assert cli(node, "template", "remove", "corpcli@1.0.0").exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe not text")
    r = cli(node, "template", "validate", str(bad))
    assert r.exit_code == 1 and "not UTF-8 text" in r.output


def test_deploy_rollback_flag(node):
    r = cli(node, "template", "set", "sogo_workers=2")
    assert r.exit_code == 0
    try:
        assert "reloaded: sogo" in cli(node, "deploy").output
    finally:
        cli(node, "template", "set", "--unset", "sogo_workers", "reject_unknown_sender_domain=false")
    r = cli(node, "deploy", "--rollback")
    assert r.exit_code == 0 and "rollback by hand" in r.output and "reloaded: sogo" in r.output
    assert cli(node, "deploy", "--plan").output.splitlines()[0] == "no changes"
    r = cli(node, "deploy", "--rollback", "abc")
    assert r.exit_code == 2 and "is not a generation number" in r.output
