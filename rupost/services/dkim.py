"""Per-domain DKIM keys: generated and stored by the core, signed with by OpenDKIM.

Keys live in the ``dkim_keys`` table of the ``rupost`` database (the private key as PEM).
OpenDKIM reads its KeyTable and SigningTable as files: the Debian build of OpenDKIM
can read them from SQL through OpenDBX (``dsn:pgsql://...``), but its DSN syntax has no
quoting for a password holding ``@``, ``:`` or ``/``, and the database password is
generated. The core therefore writes the tables and the key files from the database
into ``/var/lib/rupost/opendkim`` (keys mode 0600, owned by ``opendkim``): before
OpenDKIM starts (the adapter's prepare step, with the keys from the render context's
node data, so every deploy and every start on every node), and when a key is generated
or rotated here, followed by SIGUSR1 to OpenDKIM
alone (it re-reads its configuration and tables; no other daemon is reloaded). Another
node picks up a new key when its OpenDKIM starts or when ``rupost domains dkim sync``
runs there; the policy server of every node also compares the tables with the database every
15 s and rewrites them (then signals OpenDKIM) when they differ.
"""
from __future__ import annotations

import base64
import datetime as dt
import re
from typing import TYPE_CHECKING

from sqlalchemy import select

from adapters.opendkim import DKIM_USER, fingerprint, state_dir, table_files, write_files  # noqa: F401

from .. import validation
from ..db.models import Domain
from ..db.security_models import DkimKey
from ..errors import ConflictError, NotFoundError, ValidationError

if TYPE_CHECKING:
    from ..db.engine import Databases
    from . import Services

_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
ALLOWED_BITS = (1024, 2048, 3072, 4096)


def generate_rsa(bits: int) -> tuple[str, str]:
    """(private key PEM, public key base64 DER) for a new RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


def txt_value(public_key: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key}"


def active_keys(dbs: Databases) -> list[tuple[str, str, str]]:
    with dbs.session("main") as s:
        return [(k.domain, k.selector, k.private_key)
                for k in s.scalars(select(DkimKey).where(DkimKey.active).order_by(DkimKey.domain))]


class DkimService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def _domain(self, name: str) -> str:
        name = validation.domain_name(name)
        self.app.require_domain(name)
        with self.app.dbs.session("data") as s:
            if s.scalar(select(Domain).where(Domain.name == name)) is None:
                raise NotFoundError(f"domain {name} does not exist (rupost domains add {name})")
        return name

    @staticmethod
    def _selector(selector: str | None, taken: set[str]) -> str:
        if selector:
            selector = selector.strip().lower()
            if not _SELECTOR.match(selector):
                raise ValidationError(f"{selector!r} is not a valid DKIM selector (letters, digits and '-', "
                                      "at most 63 characters)")
            if selector in taken:
                raise ConflictError(f"selector {selector} was already used for this domain; choose another")
            return selector
        base = "rp" + dt.datetime.now(dt.UTC).strftime("%Y%m")
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    @staticmethod
    def _bits(bits: int) -> int:
        if bits not in ALLOWED_BITS:
            raise ValidationError(f"{bits} is not a supported RSA key size (choose one of "
                                  f"{', '.join(map(str, ALLOWED_BITS))}; 2048 is the usual choice)")
        return bits

    def generate(self, domain: str, selector: str | None = None, bits: int = 2048) -> dict:
        domain, bits = self._domain(domain), self._bits(bits)
        with self.app.dbs.session("main") as s:
            existing = list(s.scalars(select(DkimKey).where(DkimKey.domain == domain)))
            if any(k.active for k in existing):
                raise ConflictError(f"domain {domain} already has a DKIM key (rupost domains dkim show {domain}; "
                                    f"rupost domains dkim rotate {domain} makes a new one)")
            selector = self._selector(selector, {k.selector for k in existing})
            pem, public = generate_rsa(bits)
            s.add(DkimKey(domain=domain, selector=selector, bits=bits, private_key=pem, public_key=public,
                          active=True))
        self.app.audit.record("dkim.generate", domain, selector=selector, bits=bits)
        self.apply()
        return self.show(domain)

    def rotate(self, domain: str, selector: str | None = None, bits: int | None = None) -> dict:
        domain = self._domain(domain)
        with self.app.dbs.session("main") as s:
            existing = list(s.scalars(select(DkimKey).where(DkimKey.domain == domain)))
            current = [k for k in existing if k.active]
            if not current:
                raise NotFoundError(f"domain {domain} has no DKIM key yet (rupost domains dkim generate {domain})")
            bits = self._bits(bits or current[0].bits)
            selector = self._selector(selector, {k.selector for k in existing})
            pem, public = generate_rsa(bits)
            for k in current:
                k.active = False
            s.add(DkimKey(domain=domain, selector=selector, bits=bits, private_key=pem, public_key=public,
                          active=True))
        self.app.audit.record("dkim.rotate", domain, selector=selector, previous=current[0].selector)
        self.apply()
        return self.show(domain)

    def show(self, domain: str) -> dict:
        domain = validation.domain_name(domain)
        self.app.require_domain(domain)  # a domain administrator reads their own domains' keys only
        with self.app.dbs.session("main") as s:
            keys = list(s.scalars(select(DkimKey).where(DkimKey.domain == domain).order_by(DkimKey.created_at)))
        active = [k for k in keys if k.active]
        if not active:
            raise NotFoundError(f"domain {domain} has no DKIM key (rupost domains dkim generate {domain})")
        key = active[-1]
        return {"domain": domain, "selector": key.selector, "bits": key.bits, "created_at": key.created_at,
                "record": f"{key.selector}._domainkey.{domain}", "txt": txt_value(key.public_key),
                "previous": [{"selector": k.selector, "created_at": k.created_at,
                              "record": f"{k.selector}._domainkey.{domain}", "txt": txt_value(k.public_key)}
                             for k in keys if not k.active]}

    def active_key(self, domain: str) -> dict | None:
        try:
            return self.show(domain)
        except NotFoundError:
            return None

    def apply(self) -> dict:
        """Write OpenDKIM's tables and keys from the database and make OpenDKIM re-read them
        (SIGUSR1 to OpenDKIM only). Without a deployed OpenDKIM the files are just written."""
        write_files(self.app.layout, active_keys(self.app.dbs))
        reloaded = False
        if "opendkim" in self.app.adapters and self.app.layout.current.exists() \
                and self.app.backend.is_running("opendkim"):
            self.app.backend.reload("opendkim", self.app.components.process_spec("opendkim"))
            reloaded = True
        return {"written": str(state_dir(self.app.layout)), "reloaded": reloaded}
