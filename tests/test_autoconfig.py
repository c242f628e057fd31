"""Client autoconfiguration fetched through the deployed node (HAProxy -> nginx -> the core's
unix socket): Thunderbird's XML is well-formed, has the clientConfig v1.1 structure and names
the right host and ports; Outlook autodiscover answers a POST; the Apple profile parses;
unknown domains get 404."""
from __future__ import annotations

import http.client
import json
import os
import plistlib
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from mailclients import insecure_tls

AD_RESPONSE = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
AD_REQUEST = ("<?xml version=\"1.0\" encoding=\"utf-8\"?>"
              "<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">"
              "<Request><EMailAddress>{}</EMailAddress><AcceptableResponseSchema>"
              "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
              "</AcceptableResponseSchema></Request></Autodiscover>")


@pytest.fixture(scope="module")
def autoconfig_server(node):
    sock = node.layout.run / "autoconfig.sock"
    proc = subprocess.Popen([sys.executable, "-m", "rupost.cli", "--root", str(node.root), "autoconfig", "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"autoconfig server did not start: {proc.stderr.read().decode()}")
        time.sleep(0.1)
    yield proc
    proc.terminate()
    proc.wait(10)


def fetch(node, path, *, host, method="GET", body=None, tls=True, headers=None):
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", node.ports["https"], context=insecure_tls(), timeout=15)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", node.ports["http"], timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def check_clientconfig(xml: bytes) -> ET.Element:
    """Structure of Mozilla's clientConfig v1.1 (the fields a client needs), or AssertionError."""
    root = ET.fromstring(xml)  # well-formed
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    providers = root.findall("emailProvider")
    assert len(providers) == 1 and providers[0].get("id")
    provider = providers[0]
    assert [d.text for d in provider.findall("domain")], "emailProvider needs a domain"
    assert provider.findtext("displayName") and provider.findtext("displayShortName")
    for tag, kind in (("incomingServer", "imap"), ("outgoingServer", "smtp")):
        servers = provider.findall(tag)
        assert servers, f"no {tag}"
        for server in servers:
            assert server.get("type") == kind
            assert server.findtext("hostname")
            assert 0 < int(server.findtext("port")) < 65536
            assert server.findtext("socketType") in ("SSL", "STARTTLS", "plain")
            assert server.findtext("username") == "%EMAILADDRESS%"
            assert server.findtext("authentication") in ("password-cleartext", "password-encrypted", "OAuth2")
    return root


def test_thunderbird_over_https_names_the_right_hosts_and_ports(node, domain, autoconfig_server):
    status, headers, body = fetch(node, f"/mail/config-v1.1.xml?emailaddress=someone%40{domain}",
                                  host="mail.rupost.test")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/xml")
    root = check_clientconfig(body)
    provider = root.find("emailProvider")
    assert provider.get("id") == domain and provider.findtext("domain") == domain
    imap, smtp = provider.find("incomingServer"), provider.find("outgoingServer")
    mail_host = node.app.settings.mail_host()
    assert (imap.findtext("hostname"), int(imap.findtext("port")), imap.findtext("socketType")) == \
        (mail_host, node.ports["imaps"], "SSL")
    assert (smtp.findtext("hostname"), int(smtp.findtext("port")), smtp.findtext("socketType")) == \
        (mail_host, node.ports["submissions"], "SSL")

    # the well-known path, with the domain taken from the autoconfig.<domain> host name
    status, _, body2 = fetch(node, "/.well-known/autoconfig/mail/config-v1.1.xml", host=f"autoconfig.{domain}")
    assert status == 200 and check_clientconfig(body2).find("emailProvider").get("id") == domain
    # over plain HTTP too (guide App.2: unsecured autodiscovery on 80); everything else still redirects
    status, _, body3 = fetch(node, f"/mail/config-v1.1.xml?emailaddress=a%40{domain}", host="x", tls=False)
    assert status == 200 and check_clientconfig(body3) is not None
    status, headers, _ = fetch(node, "/SOGo/", host="mail.rupost.test", tls=False)
    assert status == 301 and headers["Location"].startswith("https://")


def test_client_host_parameter_and_disabled_domain(node, domain, autoconfig_server):
    node.app.templates.set_parameters({"client_mail_host": "imap.clients.example"})
    try:
        _, _, body = fetch(node, f"/mail/config-v1.1.xml?emailaddress=a%40{domain}", host="mail.rupost.test")
        assert check_clientconfig(body).find("emailProvider/incomingServer").findtext("hostname") == \
            "imap.clients.example"
    finally:
        node.app.templates.set_parameters({}, unset=["client_mail_host"])
    node.app.domains.set_enabled(domain, False)
    status, _, _ = fetch(node, f"/mail/config-v1.1.xml?emailaddress=a%40{domain}", host="mail.rupost.test")
    assert status == 404


def test_unknown_domain_and_bad_input(node, autoconfig_server):
    status, _, body = fetch(node, "/mail/config-v1.1.xml?emailaddress=a%40not-served.example",
                            host="mail.rupost.test")
    assert status == 404 and b"not served" in body
    status, _, _ = fetch(node, "/.well-known/autoconfig/mail/config-v1.1.xml", host="autoconfig.nope.example")
    assert status == 404
    status, _, body = fetch(node, "/mail/config-v1.1.xml?emailaddress=%3Cx%3E%40evil", host="mail.rupost.test")
    assert status == 400 and (b"not a mail address" in body or b"invalid" in body)
    status, _, _ = fetch(node, "/mail/config-v1.1.xml", host="mail.rupost.test")
    assert status == 400


def test_outlook_autodiscover_post(node, domain, autoconfig_server):
    address = f"ivan@{domain}"
    status, headers, body = fetch(node, "/AUTODISCOVER/autoDiscover.XML", host=f"autodiscover.{domain}",
                                  method="POST", body=AD_REQUEST.format(address).encode(),
                                  headers={"Content-Type": "text/xml"})
    assert status == 200, body
    root = ET.fromstring(body)
    assert root.tag == "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}Autodiscover"
    account = root.find(f"{AD_RESPONSE}Response/{AD_RESPONSE}Account")
    assert account.findtext(f"{AD_RESPONSE}AccountType") == "email"
    protocols = {p.findtext(f"{AD_RESPONSE}Type"): p for p in account.findall(f"{AD_RESPONSE}Protocol")}
    assert set(protocols) == {"IMAP", "SMTP"}
    for kind, port in (("IMAP", node.ports["imaps"]), ("SMTP", node.ports["submissions"])):
        p = protocols[kind]
        assert p.findtext(f"{AD_RESPONSE}Server") == node.app.settings.mail_host()
        assert int(p.findtext(f"{AD_RESPONSE}Port")) == port
        assert p.findtext(f"{AD_RESPONSE}SSL") == "on"
        assert p.findtext(f"{AD_RESPONSE}LoginName") == address

    # unknown domain, malformed XML, a DTD, GET
    status, _, _ = fetch(node, "/autodiscover/autodiscover.xml", host="x", method="POST",
                         body=AD_REQUEST.format("a@unknown.example").encode())
    assert status == 404
    status, _, _ = fetch(node, "/autodiscover/autodiscover.xml", host="x", method="POST", body=b"<Autodiscover><")
    assert status == 400
    bomb = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]>'
            b"<Autodiscover><Request><EMailAddress>&x;@" + domain.encode() + b"</EMailAddress></Request></Autodiscover>")
    status, _, _ = fetch(node, "/autodiscover/autodiscover.xml", host="x", method="POST", body=bomb)
    assert status == 400
    status, _, _ = fetch(node, "/autodiscover/autodiscover.xml", host="x")
    assert status == 405


def test_apple_mobileconfig(node, domain, autoconfig_server):
    status, headers, body = fetch(node, f"/mobileconfig?emailaddress=anna%40{domain}", host="mail.rupost.test")
    assert status == 200 and headers["Content-Type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration"
    mail = [p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.mail.managed"][0]
    assert mail["EmailAddress"] == f"anna@{domain}"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == \
        (node.app.settings.mail_host(), node.ports["imaps"])
    assert (mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"]) == (node.ports["submissions"], True)
    status, _, _ = fetch(node, "/mobileconfig?emailaddress=anna%40unknown.example", host="mail.rupost.test")
    assert status == 404


def test_dns_records_cli(node, domain):
    proc = subprocess.run([sys.executable, "-m", "rupost.cli", "--root", str(node.root), "domains", "dns", domain],
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    host = node.app.settings.mail_host()
    assert f"autoconfig.{domain}." in proc.stdout and f"CNAME {host}." in proc.stdout
    assert f"_imaps._tcp.{domain}." in proc.stdout and f"{node.ports['imaps']} {host}." in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "rupost.cli", "--root", str(node.root), "domains", "dns",
                          "unknown.example"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "unknown.example does not exist" in bad.stderr


def settings_cli(node, *args):
    from click.testing import CliRunner

    from rupost.cli import main as rupost

    return CliRunner().invoke(rupost, ["--root", str(node.root), "settings", "mail-host", *args],
                              catch_exceptions=False)


def test_outlook_autodiscover_and_thunderbird_name_the_configured_mail_host(node, domain, autoconfig_server):
    """The host clients are told is the configured mail host name, never the node's own name:
    the one the wizard stored for this node, then one set with `rupost settings mail-host`."""
    assert node.app.settings.mail_host() == "mail.rupost.test" != node.app.config.fqdn
    configured = "mx.configured.test"
    r = settings_cli(node, configured)
    assert r.exit_code == 0 and f"mail host name set to {configured}" in r.output, r.output
    assert "rupost deploy" in r.output  # the daemons take it at the next deploy
    try:
        address = f"olga@{domain}"
        status, _, body = fetch(node, "/autodiscover/autodiscover.xml", host=f"autodiscover.{domain}",
                                method="POST", body=AD_REQUEST.format(address).encode(),
                                headers={"Content-Type": "text/xml; charset=utf-8"})
        assert status == 200, body
        account = ET.fromstring(body).find(f"{AD_RESPONSE}Response/{AD_RESPONSE}Account")
        servers = {p.findtext(f"{AD_RESPONSE}Type"): p.findtext(f"{AD_RESPONSE}Server")
                   for p in account.findall(f"{AD_RESPONSE}Protocol")}
        assert servers == {"IMAP": configured, "SMTP": configured}

        status, _, body = fetch(node, "/.well-known/autoconfig/mail/config-v1.1.xml", host=f"autoconfig.{domain}")
        assert status == 200, body
        provider = check_clientconfig(body).find("emailProvider")
        assert [s.findtext("hostname") for s in (*provider.findall("incomingServer"),
                                                 *provider.findall("outgoingServer"))] == [configured, configured]
        assert provider.find("documentation").get("url").startswith(f"https://{configured}")
    finally:
        assert settings_cli(node, "mail.rupost.test").exit_code == 0
    status, _, body = fetch(node, f"/mail/config-v1.1.xml?emailaddress=a%40{domain}", host="mail.rupost.test")
    assert check_clientconfig(body).find("emailProvider/incomingServer").findtext("hostname") == "mail.rupost.test"


def test_banner_and_ehlo_name_the_mail_host(node):
    import smtplib

    with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=15) as client:
        code, banner = client.ehlo("client.example.org")
        assert code == 250 and banner.decode().splitlines()[0] == "mail.rupost.test"
    assert smtp_greeting(node).startswith("mail.rupost.test ESMTP")


def smtp_greeting(node) -> str:
    """Port 25's 220 greeting, text only."""
    import smtplib

    client = smtplib.SMTP(timeout=15)
    try:
        code, greeting = client.connect("127.0.0.1", node.ports["smtp"])
        assert code == 220, (code, greeting)
        return greeting.decode()
    finally:
        client.close()


def test_unqualified_mail_host_is_refused_by_the_cli_and_allowed_on_request(node):
    r = settings_cli(node, "localhost")
    assert r.exit_code == 1 and "'localhost' is a loopback name" in r.output and "--allow-unqualified-host" in r.output
    assert node.app.settings.mail_host() == "mail.rupost.test"
    r = settings_cli(node, "192.0.2.1", "--allow-unqualified-host")
    assert r.exit_code == 1 and "is an IP address" in r.output
    r = settings_cli(node, "mailhost", "--allow-unqualified-host")
    try:
        assert r.exit_code == 0 and "mailhost is not fully qualified" in r.output, r.output
        assert node.app.settings.mail_host() == "mailhost"
    finally:
        assert settings_cli(node, "mail.rupost.test").exit_code == 0
    shown = settings_cli(node, "--json")
    assert json.loads(shown.output)["mail_host"] == "mail.rupost.test"


def test_a_node_with_an_unqualified_mail_host_deploys_and_greets_with_it(node):
    """What scripts/quickstart gives a machine without a fully qualified name (CI runners): the
    daemons accept the name (postfix myhostname, dovecot postmaster address), every probe passes."""
    node.app.settings.set_mail_host("vm", allow_unqualified=True)
    try:
        outcome = node.deploy()
        assert outcome.result == "applied", outcome
        assert smtp_greeting(node).startswith("vm ESMTP")
    finally:
        node.app.settings.set_mail_host("mail.rupost.test")
        assert node.deploy().result == "applied"
