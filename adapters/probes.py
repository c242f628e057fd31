"""Real protocol probes through a node's public ports (SPEC §4 step 5)."""
from __future__ import annotations

import http.client
import imaplib
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass
class ProbeResult:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _insecure_tls() -> ssl.SSLContext:
    # probes check that the service answers, not who signed its certificate (the
    # builtin certificate is self-signed); certificate checks live in `rupost cert`
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def probe_smtp(host: str, port: int, timeout: float = 10) -> ProbeResult:
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            code, _ = smtp.ehlo("probe.rupost.invalid")
            if code != 250:
                return ProbeResult("smtp", False, f"EHLO answered {code}")
            if not smtp.has_extn("starttls"):
                return ProbeResult("smtp", False, "STARTTLS is not offered")
            smtp.starttls(context=_insecure_tls())
            code, _ = smtp.ehlo("probe.rupost.invalid")
            return ProbeResult("smtp", code == 250, f"EHLO + STARTTLS on {host}:{port}: {code}")
    except (OSError, smtplib.SMTPException) as exc:
        return ProbeResult("smtp", False, f"{host}:{port}: {exc}")


def probe_submissions(host: str, port: int, timeout: float = 10) -> ProbeResult:
    try:
        with smtplib.SMTP_SSL(host, port, timeout=timeout, context=_insecure_tls()) as smtp:
            code, _ = smtp.ehlo("probe.rupost.invalid")
            ok = code == 250 and smtp.has_extn("auth")
            return ProbeResult("submissions", ok, f"implicit TLS EHLO on {host}:{port}: {code}"
                               + ("" if ok else ", AUTH not offered"))
    except (OSError, smtplib.SMTPException) as exc:
        return ProbeResult("submissions", False, f"{host}:{port}: {exc}")


def probe_imaps(host: str, port: int, timeout: float = 10) -> ProbeResult:
    try:
        imap = imaplib.IMAP4_SSL(host, port, ssl_context=_insecure_tls(), timeout=timeout)
        try:
            caps = imap.capabilities
            ok = "IMAP4REV1" in caps and "AUTH=PLAIN" in caps
            return ProbeResult("imaps", ok, f"CAPABILITY on {host}:{port}: {' '.join(caps)}")
        finally:
            imap.logout()
    except (OSError, imaplib.IMAP4.error) as exc:
        return ProbeResult("imaps", False, f"{host}:{port}: {exc}")


def https_request(host: str, port: int, method: str, path: str, body: bytes | None = None,
                  headers: dict | None = None, timeout: float = 15) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_insecure_tls())
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def probe_https(host: str, port: int, timeout: float = 15) -> ProbeResult:
    try:
        status, _, _ = https_request(host, port, "GET", "/SOGo/", timeout=timeout)
        return ProbeResult("https", status == 200, f"GET /SOGo/ on {host}:{port}: {status}")
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult("https", False, f"{host}:{port}: {exc}")


def probe_caldav(host: str, port: int, timeout: float = 15) -> ProbeResult:
    """OPTIONS on the DAV root must advertise calendar-access (RFC 4791)."""
    try:
        status, headers, _ = https_request(host, port, "OPTIONS", "/SOGo/dav/", timeout=timeout)
        dav = headers.get("dav", "")
        ok = status in (200, 401) or "calendar-access" in dav
        return ProbeResult("caldav", ok, f"OPTIONS /SOGo/dav/ on {host}:{port}: {status} {dav}".strip())
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult("caldav", False, f"{host}:{port}: {exc}")


def tcp_table_get(host: str, port: int, key: str, timeout: float = 5) -> str:
    """One lookup in a postfix tcp_table(5) server: "get KEY" answers "200 VALUE", "500 ..."
    (not found) or "400 ..." (error). The key is %-encoded like postfix does."""
    from urllib.parse import quote

    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"get {quote(key, safe='@+=-._')}\n".encode())
        reply = b""
        while not reply.endswith(b"\n") and len(reply) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode(errors="replace").strip()


def probe_srs_forward(host: str, port: int, timeout: float = 5) -> ProbeResult:
    """postsrsd's forward table rewrites an outside sender to an SRS0 address."""
    try:
        reply = tcp_table_get(host, port, "probe@probe.rupost.invalid", timeout)
    except OSError as exc:
        return ProbeResult("srs", False, f"{host}:{port}: {exc}")
    ok = reply.startswith("200 SRS0")
    return ProbeResult("srs", ok, f"forward lookup on {host}:{port}: {reply[:120]}")


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def wait_for_unix_socket(path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                sock.connect(path)
                return True
        except OSError:
            time.sleep(0.1)
    return False


def retry(probe: Callable[..., ProbeResult], *args: Any, attempts_for: float = 30.0) -> ProbeResult:
    """Daemons answer a moment after a reload; retry a failing probe for a bounded time."""
    deadline = time.monotonic() + attempts_for
    while True:
        result = probe(*args)
        if result.ok or time.monotonic() >= deadline:
            return result
        time.sleep(0.5)
