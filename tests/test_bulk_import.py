"""Bulk provisioning: `rupost mailboxes import CSV` on a live node, all or nothing."""
from __future__ import annotations

import json

from click.testing import CliRunner

from mailclients import IMAPSFrom
from rupost.cli import main as rupost
from support.evidence import reload_evidence


def cli(node, *args, input=None):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], input=input, catch_exceptions=False)


def evidence(node):
    return reload_evidence(node.layout, node.app.backend, node.app.adapters)


def imaps_login(node, user, password) -> None:
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    try:
        assert imap.login(user, password)[0] == "OK"
    finally:
        imap.logout()


def addresses(node, domain) -> list[str]:
    return [m["address"] for m in node.app.mailboxes.list(domain)]


def test_imported_mailboxes_log_in_over_imaps_with_zero_reloads(node, domain, tmp_path):
    # header in another order, quoted fields with commas, blank line, BOM, upper-case address
    rows = [f'"Ann, Sales",ann-password-1,{"Ann@" + domain.upper()},2G',
            "",
            f"Bob,\"bob,pass\"\"word\",bob@{domain},0"]
    rows += [f"User {i},user-password-{i},u{i}@{domain},500M" for i in range(70)]  # past the parallel-hashing threshold
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("\ufeffname,password,address,quota\n" + "\n".join(rows) + "\n", encoding="utf-8")
    before = evidence(node)
    r = cli(node, "mailboxes", "import", str(csv_file))
    assert r.exit_code == 0, r.output
    assert f"72 mailbox(es) imported into {domain}" in r.output
    got = {m["address"]: m for m in node.app.mailboxes.list(domain)}
    assert len(got) == 72
    assert got[f"ann@{domain}"] == {"address": f"ann@{domain}", "display_name": "Ann, Sales",
                                    "quota_bytes": 2 * 1024 ** 3, "enabled": True}
    assert got[f"u69@{domain}"]["quota_bytes"] == 500 * 1024 ** 2
    imaps_login(node, f"ann@{domain}", "ann-password-1")
    imaps_login(node, f"bob@{domain}", 'bob,pass"word')
    imaps_login(node, f"u69@{domain}", "user-password-69")
    assert evidence(node) == before
    actions = [(a["action"], a["target"]) for a in node.app.audit.recent(200)]
    assert ("mailbox.add", f"u0@{domain}") in actions and ("mailbox.import", str(csv_file)) in actions


def test_bad_rows_are_reported_by_line_and_nothing_is_imported(node, domain, mailbox, tmp_path):
    existing, _ = mailbox("taken")
    node.app.aliases.add(f"team@{domain}", [existing])
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("\n".join([
        "address,password,quota",
        f"good1@{domain},good-password-1,1G",        # line 2: fine
        "not an address,good-password-2,1G",         # line 3
        f"short@{domain},short,1G",                  # line 4
        f"good2@{domain},good-password-3,lots",      # line 5
        f"good1@{domain},good-password-4,0",         # line 6: twice in the file
        "someone@no-such-domain.test,good-password-5,0",  # line 7
        f"{existing},good-password-6,0",             # line 8
        f"team@{domain},good-password-7,0",          # line 9
        f"extra@{domain},good-password-8,0,surplus",  # line 10: one field too many
        f"good3@{domain},good-password-9,0",         # line 11: fine
    ]) + "\n")
    before = evidence(node)
    r = cli(node, "mailboxes", "import", str(csv_file))
    assert r.exit_code == 1
    # a row with the wrong number of fields stops the reading: the file's shape is reported first
    assert "line 10: 4 field(s), the header has 3" in r.output and "nothing was imported" in r.output
    csv_file.write_text("\n".join(csv_file.read_text().splitlines()[:9] + [f"good3@{domain},good-password-9,0"]) + "\n")
    r = cli(node, "mailboxes", "import", str(csv_file))
    assert r.exit_code == 1
    out = r.output
    assert "7 problem(s), nothing was imported" in out
    assert "line 3: 'not an address' is not a mail address" in out
    assert "line 4: password is too short" in out
    assert "line 5: quota: 'lots' is not a size" in out
    assert f"line 6: good1@{domain} is already on line 2" in out
    assert "line 7: domain no-such-domain.test does not exist" in out
    assert f"line 8: mailbox {existing} already exists" in out
    assert f"line 9: team@{domain} is already an alias" in out
    assert "line 2:" not in out and "line 10:" not in out
    assert addresses(node, domain) == [existing]  # nothing half-imported
    # --check reports the same and never writes, also for a valid file
    good = tmp_path / "good.csv"
    good.write_text(f"address,password\nfine@{domain},fine-password-1\n")
    r = cli(node, "mailboxes", "import", "--check", str(good))
    assert r.exit_code == 0 and "1 mailbox(es) checked" in r.output
    assert addresses(node, domain) == [existing]
    assert evidence(node) == before


def test_bad_files_are_refused_with_a_clear_message(node, domain, tmp_path):
    cases = {
        "empty.csv": (b"", "is empty: the first line must name the columns"),
        "noheader.csv": (f"a@{domain},password-123\n".encode(), "unknown column(s)"),
        "missing.csv": (b"address,quota\n", "missing column(s) password"),
        "twice.csv": (b"address,password,address\n", "column(s) address named twice"),
        "latin1.csv": ("address,password,name\nx@{},pw-123456,J\xf6rg\n".format(domain).encode("latin-1"),
                       "is not UTF-8 text"),
        "onlyheader.csv": (b"address,password\n\n", "no mailbox rows after the header line"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        r = cli(node, "mailboxes", "import", str(tmp_path / name))
        assert r.exit_code == 1 and message in r.output, (name, r.output)
    r = cli(node, "mailboxes", "import", str(tmp_path / "does-not-exist.csv"))
    assert r.exit_code == 1 and "cannot read" in r.output
    assert addresses(node, domain) == []


def test_import_from_stdin_as_json(node, domain):
    r = cli(node, "mailboxes", "import", "--json", "-",
            input=f"address,password\nin1@{domain},stdin-password-1\nin2@{domain},stdin-password-2\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"checked": 2, "imported": 2, "domains": [domain]}
    imaps_login(node, f"in2@{domain}", "stdin-password-2")
