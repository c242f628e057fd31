"""The DNS records a mail domain needs, and a check of what the DNS actually serves.

``records(domain)`` lists what to publish: MX, SPF, DKIM (the domain's active key),
DMARC, the autoconfig/autodiscover CNAMEs and the SRV records of RFC 6186 / RFC 8314
(_imaps, _submissions) and RFC 6764 (_caldavs, _carddavs). ``check(domain)`` asks a
resolver (the system's, or one name server) with dnspython and reports each record as
present, missing or wrong.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .. import validation
from ..errors import ValidationError

if TYPE_CHECKING:
    from . import Services

DAV_PATH = "/SOGo/dav/"


@dataclass
class Record:
    type: str
    name: str  # absolute, with the trailing dot
    value: str  # zone-file syntax of the record data
    purpose: str
    # for the check
    status: str = ""
    found: list[str] = field(default_factory=list)
    detail: str = ""

    def zone_line(self) -> str:
        return f"{self.name} 3600 IN {self.type} {self.value}"


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


def _txt_quote(text: str) -> str:
    """A TXT value in zone-file syntax: strings of at most 255 characters."""
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def parse_nameserver(value: str) -> tuple[str, int]:
    """IP, IP:PORT or [IPv6]:PORT."""
    import ipaddress

    text = (value or "").strip()
    host, port = text, 53
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), int(m.group(2) or 53)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValidationError(f"{value!r}: the port after ':' must be a number")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValidationError(f"{value!r} is not a name server address (IP, IP:PORT or [IPv6]:PORT)") from None
    if not 0 < port < 65536:
        raise ValidationError(f"{value!r}: port {port} is out of range")
    return host, port


class DnsRecordService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def _public_port(self, name: str) -> int:
        return self.app.config.port(name)

    def _client_host(self) -> str:
        """The host name clients are told to use (template parameter client_mail_host, else the
        mail host): the target of the autoconfig CNAMEs and of the SRV records."""
        return self.app.autoconfig.client_host()

    def records(self, domain: str) -> dict:
        domain = self.app.dkim._domain(domain)  # exists, normalised
        host = _fqdn(self.app.settings.mail_host())
        client = _fqdn(self._client_host())
        zone = _fqdn(domain)
        dkim = self.app.dkim.active_key(domain)
        recs = [
            Record("MX", zone, f"10 {host}", "mail for the domain is delivered to the RuPost mail host"),
            Record("TXT", zone, _txt_quote("v=spf1 mx -all"), "SPF: only the domain's MX hosts send its mail"),
        ]
        notes = []
        problem = validation.mail_host_problem(host.rstrip("."))
        if problem:
            notes.append(f"the mail host name {host.rstrip('.')} {problem}: the MX record below cannot work; "
                         "set the real name with `rupost settings mail-host NAME`")
        if dkim:
            recs.append(Record("TXT", _fqdn(dkim["record"]), _txt_quote(dkim["txt"]),
                               f"DKIM public key (selector {dkim['selector']})"))
        else:
            notes.append(f"no DKIM key yet: rupost domains dkim generate {domain}")
        recs += [
            Record("TXT", f"_dmarc.{zone}", _txt_quote(f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"),
                   "DMARC policy (start with p=none to observe first, if you prefer)"),
            Record("CNAME", f"autoconfig.{zone}", client, "Thunderbird autoconfiguration"),
            Record("CNAME", f"autodiscover.{zone}", client, "Outlook autodiscover"),
            Record("SRV", f"_imaps._tcp.{zone}", f"0 1 {self._public_port('imaps')} {client}",
                   "IMAP over TLS (RFC 6186, RFC 8314)"),
            Record("SRV", f"_submissions._tcp.{zone}", f"0 1 {self._public_port('submissions')} {client}",
                   "mail submission over TLS (RFC 8314)"),
            Record("SRV", f"_caldavs._tcp.{zone}", f"0 1 {self._public_port('https')} {client}", "CalDAV (RFC 6764)"),
            Record("TXT", f"_caldavs._tcp.{zone}", _txt_quote(f"path={DAV_PATH}"), "CalDAV context path"),
            Record("SRV", f"_carddavs._tcp.{zone}", f"0 1 {self._public_port('https')} {client}", "CardDAV (RFC 6764)"),
            Record("TXT", f"_carddavs._tcp.{zone}", _txt_quote(f"path={DAV_PATH}"), "CardDAV context path"),
            Record("SRV", f"_autodiscover._tcp.{zone}", f"0 1 {self._public_port('https')} {client}",
                   "Outlook autodiscover (SRV)"),
        ]
        return {"domain": domain, "mail_host": host, "client_host": client, "records": recs, "notes": notes}

    def zone_text(self, domain: str) -> str:
        data = self.records(domain)
        lines = [f"; DNS records for {data['domain']} (mail host {data['mail_host']}): publish them in the "
                 f"zone {data['domain']}.", f"; The mail host name {data['mail_host']} itself needs an A "
                 "(and/or AAAA) record and a PTR record matching it, and an SPF record",
                 f"; ({data['mail_host']} TXT \"v=spf1 a -all\"): forwarded mail leaves with SRS senders of "
                 "that name."]
        for note in data["notes"]:
            lines.append(f"; NOTE: {note}")
        for rec in data["records"]:
            lines.append(f"; {rec.purpose}")
            lines.append(rec.zone_line())
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ check
    def check(self, domain: str, nameserver: str | None = None, timeout: float = 5.0) -> dict:
        import dns.exception
        import dns.resolver

        data = self.records(domain)
        if nameserver:
            ip, port = parse_nameserver(nameserver)
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [ip]
            resolver.port = port
        else:
            try:
                resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise ValidationError("no system resolver is configured: name one with --nameserver IP") from None
        resolver.lifetime = timeout
        resolver.timeout = timeout

        def lookup(name: str, rtype: str) -> list:
            try:
                return list(resolver.resolve(name, rtype, raise_on_no_answer=False) or [])
            except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):
                return []
            except dns.exception.Timeout:
                raise ValidationError(f"no answer from {nameserver or 'the system resolver'} for {name} {rtype} "
                                      f"within {timeout:g} s") from None

        host = data["mail_host"].lower()
        client = data["client_host"].lower()
        for rec in data["records"]:
            answers = lookup(rec.name, rec.type)
            if rec.type == "TXT":
                texts = [b"".join(a.strings).decode("utf-8", "replace") for a in answers]
                expected = _unquote(rec.value)
                prefix = expected.split(";", 1)[0].split(" ", 1)[0]  # v=spf1, v=DKIM1, v=DMARC1, path=...
                relevant = [t for t in texts if t.startswith(prefix)]
                rec.found = relevant
                _judge_txt(rec, expected, prefix, relevant, host)
            elif rec.type == "MX":
                rec.found = [f"{a.preference} {a.exchange.to_text().lower()}" for a in answers]
                _judge(rec, any(a.exchange.to_text().lower() == host for a in answers))
            elif rec.type == "CNAME":
                rec.found = [a.target.to_text().lower() for a in answers]
                _judge(rec, client in rec.found)
            elif rec.type == "SRV":
                want_port = int(rec.value.split()[2])
                rec.found = [f"{a.priority} {a.weight} {a.port} {a.target.to_text().lower()}" for a in answers]
                _judge(rec, any(a.port == want_port and a.target.to_text().lower() == client for a in answers))
        a_records = [a.to_text() for a in lookup(host, "A")] + [a.to_text() for a in lookup(host, "AAAA")]
        host_rec = Record("A", host, "(an address of this host)", "the mail host name resolves", found=a_records,
                          status="present" if a_records else "missing")
        records = data["records"] + [host_rec]
        problems = [r for r in records if r.status != "present"]
        return {"domain": data["domain"], "nameserver": nameserver or "system resolver",
                "records": [asdict(r) for r in records], "ok": not problems,
                "summary": (f"all {len(records)} records are published" if not problems else
                            f"{len(problems)} of {len(records)} records missing or wrong")}


def _unquote(value: str) -> str:
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', value)).replace('\\"', '"').replace("\\\\", "\\")


def _judge(rec: Record, ok: bool) -> None:
    rec.status = "present" if ok else ("wrong" if rec.found else "missing")


def _judge_txt(rec: Record, expected: str, prefix: str, found: list[str], host: str) -> None:
    if not found:
        rec.status = "missing"
    elif prefix == "v=spf1":
        if len(found) > 1:
            rec.status, rec.detail = "wrong", "more than one SPF record (RFC 7208 makes that a permanent error)"
        elif re.search(r"(^|\s)[+?]?all(\s|$)", found[0]):
            rec.status, rec.detail = "wrong", "the SPF record allows every host (+all/?all)"
        elif " mx" in f" {found[0]}" or host.rstrip(".") in found[0] or "include:" in found[0] or "a:" in found[0]:
            rec.status = "present"
        else:
            rec.status, rec.detail = "wrong", "the SPF record does not authorise the MX hosts"
    elif prefix == "v=DKIM1":
        key = re.search(r"p=([A-Za-z0-9+/=]+)", expected)
        assert key is not None  # our own record: v=DKIM1; k=rsa; p=<key>
        want = key.group(1)
        keys = [re.sub(r"\s+", "", (re.search(r"p=([A-Za-z0-9+/=\s]*)", t) or ["", ""])[1]) for t in found]
        if want in keys:
            rec.status = "present"
        else:
            rec.status, rec.detail = "wrong", "the published key is not the domain's active DKIM key"
    elif prefix == "v=DMARC1":
        rec.status = "present" if re.search(r"(^|;)\s*p=(none|quarantine|reject)\s*(;|$)", found[0]) else "wrong"
        if rec.status == "wrong":
            rec.detail = "the DMARC record has no valid p= policy"
    else:
        rec.status = "present" if expected in found else "wrong"
