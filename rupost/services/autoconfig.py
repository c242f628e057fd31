"""Client autoconfiguration: Thunderbird autoconfig, Outlook autodiscover (POX) and
the Apple configuration profile, built from the core's data.

Host name: the template parameter ``client_mail_host`` when set, else the mail
host name setting (the EHLO name, guide §2.8). Ports: the public ports of the node
configuration (IMAPS, SMTPS/submission over implicit TLS, ManageSieve, HTTPS).
The domain of the address asked for must be a domain RuPost serves (enabled),
otherwise NotFoundError (HTTP 404). Every document is built with xml.etree or
plistlib: request data never reaches the output as text.
"""
from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from .. import validation
from ..db.models import Domain
from ..errors import NotFoundError, ValidationError

if TYPE_CHECKING:
    from . import Services

AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MAX_REQUEST_BYTES = 16384
PROFILE_NAMESPACE = uuid.UUID("5c0e4f39-7d1a-4b34-9d5e-2b5b8f0e6a11")


@dataclass(frozen=True)
class ClientSettings:
    domain: str
    host: str
    imaps_port: int
    submissions_port: int
    sieve_port: int
    https_port: int

    @property
    def web_url(self) -> str:
        return f"https://{self.host}" + ("" if self.https_port == 443 else f":{self.https_port}") + "/"


class AutoconfigService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # ------------------------------------------------------------- settings
    def client_host(self) -> str:
        """The template parameter client_mail_host when set (its default is empty), else the mail host."""
        return self.app.settings.client_mail_host() or self.app.settings.mail_host()

    def settings_for(self, domain: str) -> ClientSettings:
        name = validation.domain_name(domain)
        with self.app.dbs.session("data") as s:
            row = s.scalar(select(Domain).where(Domain.name == name))
            if row is None or not row.enabled:
                raise NotFoundError(f"domain {name} is not served here")
        cfg = self.app.config
        return ClientSettings(domain=name, host=self.client_host(), imaps_port=cfg.port("imaps"),
                              submissions_port=cfg.port("submissions"), sieve_port=cfg.port("sieve"),
                              https_port=cfg.port("https"))

    @staticmethod
    def domain_of(email: str | None, host_header: str | None = None) -> tuple[str, str | None]:
        """(domain, address or None) from ?emailaddress= or, failing that, the
        autoconfig.<domain> / autodiscover.<domain> host name the client asked."""
        if email:
            local, domain = validation.address(email)
            return domain, f"{local}@{domain}"
        host = (host_header or "").split(":")[0].strip().lower()
        for prefix in ("autoconfig.", "autodiscover."):
            if host.startswith(prefix):
                return validation.domain_name(host[len(prefix):]), None
        raise ValidationError("no mail address given (?emailaddress=user@domain)")

    # ------------------------------------------------------------ thunderbird
    def thunderbird(self, domain: str) -> bytes:
        """Mozilla autoconfig v1.1 (clientConfig) for a served domain."""
        cs = self.settings_for(domain)
        root = ET.Element("clientConfig", version="1.1")
        provider = ET.SubElement(root, "emailProvider", id=cs.domain)
        ET.SubElement(provider, "domain").text = cs.domain
        ET.SubElement(provider, "displayName").text = f"{cs.domain} (RuPost)"
        ET.SubElement(provider, "displayShortName").text = cs.domain
        for tag, kind, port in (("incomingServer", "imap", cs.imaps_port),
                                ("outgoingServer", "smtp", cs.submissions_port)):
            server = ET.SubElement(provider, tag, type=kind)
            ET.SubElement(server, "hostname").text = cs.host
            ET.SubElement(server, "port").text = str(port)
            ET.SubElement(server, "socketType").text = "SSL"
            ET.SubElement(server, "username").text = "%EMAILADDRESS%"
            ET.SubElement(server, "authentication").text = "password-cleartext"
        doc = ET.SubElement(provider, "documentation", url=cs.web_url)
        ET.SubElement(doc, "descr", lang="en").text = "Webmail, calendars and contacts"
        dav = cs.web_url + "SOGo/dav/"
        for tag, kind in (("addressBook", "carddav"), ("calendar", "caldav")):
            el = ET.SubElement(root, tag, type=kind)
            ET.SubElement(el, "username").text = "%EMAILADDRESS%"
            ET.SubElement(el, "authentication").text = "http-basic"
            ET.SubElement(el, "serverURL").text = dav
        return _xml(root)

    # ------------------------------------------------------------ autodiscover
    @staticmethod
    def parse_autodiscover_request(body: bytes) -> str:
        """The EMailAddress of an Outlook POX autodiscover request."""
        if not body:
            raise ValidationError("empty autodiscover request (POST an Autodiscover XML with EMailAddress)")
        if len(body) > MAX_REQUEST_BYTES:
            raise ValidationError(f"autodiscover request larger than {MAX_REQUEST_BYTES} bytes")
        if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
            raise ValidationError("autodiscover request with a DTD refused")
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise ValidationError(f"autodiscover request is not well-formed XML: {exc}") from None
        for el in root.iter():
            text = (el.text or "").strip()
            if el.tag.rsplit("}", 1)[-1] == "EMailAddress" and text:
                return text
        raise ValidationError("autodiscover request without EMailAddress")

    def autodiscover(self, body: bytes) -> bytes:
        email = self.parse_autodiscover_request(body)
        local, domain = validation.address(email)
        address = f"{local}@{domain}"
        cs = self.settings_for(domain)
        ET.register_namespace("", AUTODISCOVER_RESPONSE_NS)
        root = ET.Element(f"{{{AUTODISCOVER_RESPONSE_NS}}}Autodiscover")
        response = ET.SubElement(root, f"{{{OUTLOOK_RESPONSE_NS}}}Response")
        q = lambda tag: f"{{{OUTLOOK_RESPONSE_NS}}}{tag}"  # noqa: E731
        user = ET.SubElement(response, q("User"))
        ET.SubElement(user, q("DisplayName")).text = address
        account = ET.SubElement(response, q("Account"))
        ET.SubElement(account, q("AccountType")).text = "email"
        ET.SubElement(account, q("Action")).text = "settings"
        for kind, port in (("IMAP", cs.imaps_port), ("SMTP", cs.submissions_port)):
            proto = ET.SubElement(account, q("Protocol"))
            for tag, value in (("Type", kind), ("Server", cs.host), ("Port", str(port)), ("DomainRequired", "off"),
                               ("LoginName", address), ("SPA", "off"), ("SSL", "on"), ("Encryption", "SSL"),
                               ("AuthRequired", "on")):
                ET.SubElement(proto, q(tag)).text = value
            if kind == "SMTP":
                ET.SubElement(proto, q("UsePOPAuth")).text = "off"
                ET.SubElement(proto, q("SMTPLast")).text = "off"
        return _xml(root)

    # ------------------------------------------------------------------ apple
    def mobileconfig(self, email: str) -> bytes:
        """An (unsigned) Apple configuration profile with the mail account."""
        local, domain = validation.address(email)
        address = f"{local}@{domain}"
        cs = self.settings_for(domain)
        ident = ".".join(reversed(cs.domain.split(".")))
        account = {
            "PayloadType": "com.apple.mail.managed",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{ident}.rupost.mail.{local}",
            "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, "mail:" + address)).upper(),
            "PayloadDisplayName": f"Mail {address}",
            "EmailAccountType": "EmailTypeIMAP",
            "EmailAccountDescription": address,
            "EmailAccountName": address,
            "EmailAddress": address,
            "IncomingMailServerHostName": cs.host,
            "IncomingMailServerPortNumber": cs.imaps_port,
            "IncomingMailServerUseSSL": True,
            "IncomingMailServerAuthentication": "EmailAuthPassword",
            "IncomingMailServerUsername": address,
            "OutgoingMailServerHostName": cs.host,
            "OutgoingMailServerPortNumber": cs.submissions_port,
            "OutgoingMailServerUseSSL": True,
            "OutgoingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingMailServerUsername": address,
            "OutgoingPasswordSameAsIncomingPassword": True,
        }
        dav = []
        for ptype, prefix in (("com.apple.caldav.account", "CalDAV"), ("com.apple.carddav.account", "CardDAV")):
            dav.append({
                "PayloadType": ptype,
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{ident}.rupost.{prefix.lower()}.{local}",
                "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, f"{prefix}:{address}")).upper(),
                "PayloadDisplayName": f"{prefix} {address}",
                f"{prefix}AccountDescription": address,
                f"{prefix}HostName": cs.host,
                f"{prefix}Port": cs.https_port,
                f"{prefix}UseSSL": True,
                f"{prefix}Username": address,
                f"{prefix}PrincipalURL": f"{cs.web_url}SOGo/dav/{address}/",
            })
        profile = {
            "PayloadType": "Configuration",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{ident}.rupost.{local}",
            "PayloadUUID": str(uuid.uuid5(PROFILE_NAMESPACE, "profile:" + address)).upper(),
            "PayloadDisplayName": f"{cs.domain} mail",
            "PayloadDescription": f"Mail, calendars and contacts of {address} on {cs.host}",
            "PayloadOrganization": cs.domain,
            "PayloadRemovalDisallowed": False,
            "PayloadContent": [account, *dav],
        }
        return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
