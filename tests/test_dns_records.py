"""`rupost domains dns` (the records to publish) and `rupost domains check` against a real
authoritative DNS server started by the test: a small UDP responder built on dnspython's
message API (tests/support/dns_zone.py), serving whatever zone the test gives it."""
from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from rupost.cli import Ctx
from rupost.cli.domains import domains_check, domains_dns
from rupost.errors import NotFoundError, ValidationError
from rupost.services.dns_records import parse_nameserver
from support.dns_zone import Zone


@pytest.fixture
def zone():
    z = Zone()
    yield z
    z.close()


def run(node, command, *args):
    return CliRunner().invoke(command, list(args), obj=Ctx(str(node.root)), catch_exceptions=False)


def test_dns_prints_every_record_to_publish(node, domain):
    node.app.dkim.generate(domain, selector="dnsprint")
    out = run(node, domains_dns, domain).output
    host = node.app.settings.mail_host() + "."
    assert f"{domain}. 3600 IN MX 10 {host}" in out
    assert f'{domain}. 3600 IN TXT "v=spf1 mx -all"' in out
    assert f'dnsprint._domainkey.{domain}. 3600 IN TXT "v=DKIM1; k=rsa; p=' in out
    assert f'_dmarc.{domain}. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"' in out
    assert f"autoconfig.{domain}. 3600 IN CNAME {host}" in out
    assert f"autodiscover.{domain}. 3600 IN CNAME {host}" in out
    ports = node.ports
    assert f"_imaps._tcp.{domain}. 3600 IN SRV 0 1 {ports['imaps']} {host}" in out
    assert f"_submissions._tcp.{domain}. 3600 IN SRV 0 1 {ports['submissions']} {host}" in out
    assert f"_caldavs._tcp.{domain}. 3600 IN SRV 0 1 {ports['https']} {host}" in out
    assert f"_carddavs._tcp.{domain}. 3600 IN SRV 0 1 {ports['https']} {host}" in out
    assert f'_caldavs._tcp.{domain}. 3600 IN TXT "path=/SOGo/dav/"' in out
    # the DKIM value is split into 255-character strings, as a zone file needs
    dkim_line = next(line for line in out.splitlines() if "_domainkey" in line)
    assert all(len(chunk) <= 255 for chunk in dkim_line.split('"')[1::2])
    data = json.loads(run(node, domains_dns, domain, "--json").output)
    assert {r["type"] for r in data["records"]} == {"MX", "TXT", "CNAME", "SRV"}
    assert host == "mail.rupost.test." != node.app.config.fqdn + "."   # the configured name, not the node's
    assert "NOTE: the mail host name" not in out


def test_dns_names_a_mail_host_that_cannot_work(node, domain):
    """An unqualified name accepted on request (a test machine): the MX record is printed as it
    is, with a note saying it cannot work, never silently."""
    node.app.settings.set_mail_host("vm", allow_unqualified=True)
    try:
        out = run(node, domains_dns, domain).output
        assert f"{domain}. 3600 IN MX 10 vm." in out
        assert "; NOTE: the mail host name vm is not fully qualified (no domain): other mail servers and " \
               "clients cannot look it up: the MX record below cannot work" in out
    finally:
        node.app.settings.set_mail_host("mail.rupost.test")


def test_dns_without_a_dkim_key_says_how_to_make_one(node, domain):
    out = run(node, domains_dns, domain).output
    assert f"; NOTE: no DKIM key yet: rupost domains dkim generate {domain}" in out
    assert "_domainkey" not in out
    with pytest.raises(NotFoundError, match="does not exist"):
        node.app.dns_records.records(f"nope-{domain}")


def test_check_reports_present_missing_and_wrong_records(node, domain, zone):
    node.app.dkim.generate(domain, selector="chk")
    expected = node.app.dns_records.records(domain)
    host = expected["mail_host"]
    lines = [r.zone_line() for r in expected["records"]]
    lines.append(f"{host} 3600 IN A 192.0.2.10")
    # publish everything but DMARC; the IMAPS SRV with a wrong port; another DKIM key; two SPF records
    published = [line for line in lines if not line.startswith(f"_dmarc.{domain}.")]
    published = [line.replace(f" {node.ports['imaps']} ", " 143 ") if line.startswith("_imaps.") else line
                 for line in published]
    from rupost.services.dkim import generate_rsa

    published = [f'chk._domainkey.{domain}. 3600 IN TXT "v=DKIM1; k=rsa; p={generate_rsa(1024)[1]}"'
                 if "_domainkey" in line else line for line in published]
    published.append(f'{domain}. 3600 IN TXT "v=spf1 a -all"')
    zone.load(published)

    r = run(node, domains_check, domain, "--nameserver", f"127.0.0.1:{zone.port}", "--json")
    assert r.exit_code == 1
    result = json.loads(r.output)
    status = {(rec["type"], rec["name"]): rec for rec in result["records"]}
    assert status[("TXT", f"_dmarc.{domain}.")]["status"] == "missing"
    assert status[("SRV", f"_imaps._tcp.{domain}.")]["status"] == "wrong"
    assert status[("SRV", f"_imaps._tcp.{domain}.")]["found"] == [f"0 1 143 {host}"]
    assert status[("TXT", f"chk._domainkey.{domain}.")]["status"] == "wrong"
    assert "not the domain's active DKIM key" in status[("TXT", f"chk._domainkey.{domain}.")]["detail"]
    spf = [rec for rec in result["records"] if rec["type"] == "TXT" and rec["name"] == f"{domain}."][0]
    assert spf["status"] == "wrong" and "more than one SPF record" in spf["detail"]
    for present in (("MX", f"{domain}."), ("CNAME", f"autoconfig.{domain}."), ("SRV", f"_caldavs._tcp.{domain}."),
                    ("A", host)):
        assert status[present]["status"] == "present", status[present]
    assert result["summary"].startswith("4 of ")

    # everything as RuPost wants it: all present, exit code 0, and the text report says so
    zone.load(lines)
    r = run(node, domains_check, domain, "--nameserver", f"127.0.0.1:{zone.port}")
    assert r.exit_code == 0, r.output
    assert "all 14 records are published" in r.output and "MISSING" not in r.output


def test_check_errors_are_clear(node, domain):
    with pytest.raises(ValidationError, match="is not a name server address"):
        parse_nameserver("ns1.example.org")
    with pytest.raises(ValidationError, match="port 70000 is out of range"):
        parse_nameserver("127.0.0.1:70000")
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # receives, never answers
    try:
        with pytest.raises(ValidationError, match="no answer from 127.0.0.1:.* within 0.5 s"):
            node.app.dns_records.check(domain, f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
    finally:
        silent.close()
