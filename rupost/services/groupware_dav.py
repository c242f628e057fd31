"""The WebDAV side of the groupware migration: a small CalDAV/CardDAV client (RFC 4918,
4791, 6352, 6764) for the source server and for SOGo.

One client serves both protocols and both ends with Python's http.client: python-caldav
(the test extra) speaks CalDAV only, and the migration needs four requests: PROPFIND,
REPORT (multiget), PUT and MKCOL-free discovery. Each thread keeps its own keep-alive
connection (uploads run in parallel).
"""
from __future__ import annotations

import base64
import http.client
import ssl
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .migration_source import MigrationError

DAV, CALDAV, CARDDAV = "DAV:", "urn:ietf:params:xml:ns:caldav", "urn:ietf:params:xml:ns:carddav"
NS = {"d": DAV, "c": CALDAV, "r": CARDDAV}
MULTIGET_BATCH = 100
TIMEOUT = 120


@dataclass
class Collection:
    kind: str  # calendar | addressbook
    path: str
    name: str


class DavNotFound(MigrationError):
    """The collection asked for does not exist (404)."""


def _xml(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?>' + body).encode()


class DavClient:
    def __init__(self, url: str, username: str, password: str, tls: ssl.SSLContext | None = None,
                 extra_headers: dict[str, str] | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise MigrationError(f"{url}: not an http:// or https:// URL")
        self.url = url
        self.scheme, self.host = parsed.scheme, parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.base_path = parsed.path or "/"
        self.tls = tls
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", **(extra_headers or {})}
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=TIMEOUT, context=self.tls)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
                ) -> tuple[int, bytes]:
        for attempt in (1, 2):  # a keep-alive connection the server closed meanwhile: one new one
            conn = self._connection()
            try:
                conn.request(method, urllib.parse.quote(path, safe="/:@%+~"), body=body,
                             headers={**self.headers, **(headers or {})})
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise MigrationError(f"{method} {self.scheme}://{self.host}:{self.port}{path}: {exc}") from None
            except (OSError, ssl.SSLError) as exc:
                conn.close()
                self._local.conn = None
                raise MigrationError(f"{method} {self.scheme}://{self.host}:{self.port}{path}: {exc}") from None
        raise AssertionError("unreachable")

    def multistatus(self, method: str, path: str, body: str, depth: str) -> list[ET.Element]:
        status, data = self.request(method, path, _xml(body),
                                    {"Depth": depth, "Content-Type": "application/xml; charset=utf-8"})
        if status == 401:
            raise MigrationError(f"{self.url}: the login was refused (401)")
        if status == 404:
            raise DavNotFound(f"{method} {path} on {self.url}: not found (404)")
        if status != 207:
            raise MigrationError(f"{method} {path} on {self.url}: HTTP {status} {data[:200]!r}")
        try:
            return ET.fromstring(data).findall("d:response", NS)
        except ET.ParseError as exc:
            raise MigrationError(f"{method} {path} on {self.url}: unreadable answer ({exc})") from None

    def propfind(self, path: str, props: str, depth: str = "0") -> list[tuple[str, ET.Element]]:
        """(href path, the <prop> of its 200 propstat) per resource."""
        out = []
        for response in self.multistatus("PROPFIND", path, f'<d:propfind xmlns:d="DAV:" xmlns:c="{CALDAV}" '
                                         f'xmlns:r="{CARDDAV}"><d:prop>{props}</d:prop></d:propfind>', depth):
            href = urllib.parse.unquote(urllib.parse.urlsplit(response.findtext("d:href", "", NS)).path)
            for propstat in response.findall("d:propstat", NS):
                prop = propstat.find("d:prop", NS)
                if " 200 " in (propstat.findtext("d:status", "", NS) + " ") and prop is not None:
                    out.append((href, prop))
        return out

    def member_names(self, collection: str) -> set[str]:
        """Names of the resources in a collection (one PROPFIND, no bodies)."""
        base = collection.rstrip("/")
        return {href.rstrip("/").rsplit("/", 1)[-1] for href, _ in self.propfind(collection, "<d:getetag/>", "1")
                if href.rstrip("/") != base}

    def put_new(self, path: str, body: str, content_type: str) -> tuple[int, str]:
        """PUT that never overwrites (If-None-Match: *): 412 means the name is taken."""
        status, data = self.request("PUT", path, body.encode(), {"Content-Type": f"{content_type}; charset=utf-8",
                                                                 "If-None-Match": "*"})
        return status, data.decode("utf-8", "replace").strip()

    def make_calendar(self, path: str, display: str) -> None:
        """MKCALENDAR (RFC 4791 §5.3.1) with a display name."""
        body = (f'<c:mkcalendar xmlns:d="DAV:" xmlns:c="{CALDAV}"><d:set><d:prop><d:displayname>'
                f"{_escape(display)}</d:displayname></d:prop></d:set></c:mkcalendar>")
        status, data = self.request("MKCALENDAR", path, _xml(body), {"Content-Type": "application/xml; charset=utf-8"})
        if status not in (200, 201):
            raise MigrationError(f"MKCALENDAR {path} on {self.url}: HTTP {status} {data[:200]!r}")

    # ----------------------------------------------------------- discovery
    def _href(self, prop: ET.Element | None, name: str) -> str | None:
        found = prop.find(f"{name}/d:href", NS) if prop is not None else None
        if found is None or not found.text:
            return None
        return urllib.parse.unquote(urllib.parse.urlsplit(found.text).path)

    def collections(self) -> list[Collection]:
        """The user's calendars and address books, found from the URL alone (RFC 6764 §6:
        current-user-principal, then the calendar and address book home sets)."""
        found = self.propfind(self.base_path, "<d:current-user-principal/>")
        principal = self._href(found[0][1] if found else None, "d:current-user-principal") or self.base_path
        homes = self.propfind(principal, "<c:calendar-home-set/><r:addressbook-home-set/>")
        prop = homes[0][1] if homes else None
        wanted = [h for h in (self._href(prop, "c:calendar-home-set"), self._href(prop, "r:addressbook-home-set")) if h]
        if not wanted:
            raise MigrationError(f"{self.url}: no calendar or address book home found for this login")
        out: dict[str, Collection] = {}
        for home in dict.fromkeys(wanted):
            for href, prop in self.propfind(home, "<d:resourcetype/><d:displayname/>", "1"):
                types = prop.find("d:resourcetype", NS)
                name = prop.findtext("d:displayname", "", NS) or href.rstrip("/").rsplit("/", 1)[-1]
                if types is not None and types.find("c:calendar", NS) is not None:
                    out[href] = Collection("calendar", href, name)
                elif types is not None and types.find("r:addressbook", NS) is not None:
                    out[href] = Collection("addressbook", href, name)
        return list(out.values())

    def objects(self, collection: Collection) -> list[tuple[str, str]]:
        """(href, text) of every object, fetched with multiget in batches."""
        base = collection.path.rstrip("/")
        hrefs = sorted(href for href, _ in self.propfind(collection.path, "<d:getetag/>", "1")
                       if href.rstrip("/") != base)
        if collection.kind == "calendar":
            report, data = f'<c:calendar-multiget xmlns:d="DAV:" xmlns:c="{CALDAV}">', "c:calendar-data"
            close = "</c:calendar-multiget>"
        else:
            report, data = f'<r:addressbook-multiget xmlns:d="DAV:" xmlns:r="{CARDDAV}">', "r:address-data"
            close = "</r:addressbook-multiget>"
        out = []
        for start in range(0, len(hrefs), MULTIGET_BATCH):
            batch = "".join(f"<d:href>{_escape(urllib.parse.quote(h))}</d:href>"
                            for h in hrefs[start:start + MULTIGET_BATCH])
            body = f"{report}<d:prop><d:getetag/><{data}/></d:prop>{batch}{close}"
            for response in self.multistatus("REPORT", collection.path, body, "1"):
                href = urllib.parse.unquote(response.findtext("d:href", "", NS))
                text = response.findtext(f"d:propstat/d:prop/{data}", "", NS)
                if text:
                    out.append((href, text))
        return out


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
