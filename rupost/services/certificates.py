"""TLS certificates and DH parameters kept in the rupost database (SPEC §8, guide §6.1).

Every certificate and key is validated on import (rupost.tls.validate_certificate);
one certificate per type is active. The active ``mail`` certificate and the active
DH parameters are written into each generation's tls/ directory by the deploy
pipeline (DeployService.tls_material), so `activate` or `dhparam import` take effect
on the next `rupost deploy`. The ``control_panel`` certificate is for the panel,
which reads the active one when the rupost service starts.
"""
from __future__ import annotations

import builtins
import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from .. import tls
from ..db.models import Certificate, DHParam, Domain
from ..errors import ConflictError, NotFoundError, ValidationError
from .setup import BUILTIN_DHPARAM, BUILTIN_MAIL_CERT, BUILTIN_PANEL_CERT

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

CERT_TYPES = ("mail", "control_panel")
WARN_DAYS = 30
CRITICAL_DAYS = 7
BUILTIN_CERT_TYPES = {BUILTIN_MAIL_CERT: "mail", BUILTIN_PANEL_CERT: "control_panel"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
MAX_FILE = 1024 * 1024  # a certificate chain or key is a few KiB


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name or ""):
        raise ValidationError(f"invalid {what} name {name!r}: use letters, digits, '.', '_', '-', '@' "
                              "(max 128, starting with a letter or digit)")


def read_upload(path: str, what: str) -> str:
    p = Path(path)
    try:
        if p.is_dir():
            raise ValidationError(f"{what} {path} is a directory, not a file")
        if p.stat().st_size > MAX_FILE:
            raise ValidationError(f"{what} {path} is larger than {MAX_FILE // 1024} KiB: not a PEM file")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ValidationError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise ValidationError(f"{what} {path} is not readable by this user") from None
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ValidationError(f"{what} {path} is not a PEM text file (DER? convert it with "
                              "`openssl x509 -inform der` / `openssl pkey -inform der`)") from None


class CertificateService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # -- what a certificate must cover
    def required_names(self, cert_type: str) -> list[str]:
        """Both types are served under the mail host name (mail ports on it, the panel on its port 5000)."""
        return [self.app.settings.mail_host()]

    def expected_names(self, cert_type: str) -> builtins.list[str]:
        """The names clients reach a certificate's services by: the mail host for both types;
        for the mail certificate also the host clients are told (client_mail_host) and the
        autoconfig./autodiscover. names of every enabled domain (Thunderbird and Outlook try
        https://autoconfig.DOMAIN and https://autodiscover.DOMAIN first)."""
        names = [self.app.settings.mail_host()]
        if cert_type == "mail":
            names.append(self.app.autoconfig.client_host())
            for domain in self._enabled_domains():
                names += [f"autoconfig.{domain}", f"autodiscover.{domain}"]
        return list(dict.fromkeys(names))

    def builtin_names(self) -> builtins.list[str]:
        """What a builtin self-signed certificate is issued for, computed when it is issued: the
        expected names, then this node's own names and loopback (local tools and probes)."""
        cfg = self.app.config
        return list(dict.fromkeys([*self.expected_names("mail"), cfg.fqdn, cfg.node_name, "localhost",
                                   "127.0.0.1", cfg.address]))

    def _enabled_domains(self) -> builtins.list[str]:
        with self.app.dbs.session("data") as s:
            return list(s.scalars(select(Domain.name).where(Domain.enabled).order_by(Domain.name)))

    @staticmethod
    def _missing(cert_pem: str, wanted: builtins.list[str]) -> builtins.list[str]:
        have = tls.describe_stored(cert_pem)["names"]
        return [n for n in wanted if not any(tls.name_matches(pattern, n) for pattern in have)]

    def active_coverage(self) -> builtins.list[dict]:
        """Each active certificate and the expected names it does not cover."""
        with self.app.dbs.session("main") as s:
            rows = [(r.name, r.cert_type, r.builtin, r.cert_pem)
                    for r in s.scalars(select(Certificate).where(Certificate.active).order_by(Certificate.cert_type))]
        return [{"name": name, "type": cert_type, "builtin": builtin,
                 "missing": self._missing(pem, self.expected_names(cert_type))}
                for name, cert_type, builtin, pem in rows]

    def domain_note(self, domain: str) -> str | None:
        """What to do when the active mail certificate does not cover a domain's
        autoconfig./autodiscover. names (after `domains add`), or None."""
        for cert in self.active_coverage():
            missing = [n for n in cert["missing"] if n.endswith(f".{domain}")]
            if cert["type"] != "mail" or not missing:
                continue
            fix = (f"`rupost cert regenerate-builtin {cert['name']}` and `rupost deploy` add them (clients are "
                   "asked to trust the new self-signed certificate)" if cert["builtin"] else
                   "a certificate that covers them does; until then clients fall back to plain-HTTP autoconfig "
                   "and the SRV records")
            return f"the active mail certificate {cert['name']} does not cover {', '.join(missing)}: {fix}"
        return None

    def _row(self, s: Session, name: str) -> Certificate:
        row = s.scalar(select(Certificate).where(Certificate.name == name))
        if row is None:
            known = ", ".join(s.scalars(select(Certificate.name).order_by(Certificate.name))) or "none"
            raise NotFoundError(f"no certificate named {name!r} (known: {known})")
        return row

    @staticmethod
    def _summary(row: Certificate, now: dt.datetime | None = None) -> dict:
        now = now or dt.datetime.now(dt.UTC)
        days = (row.not_after - now).total_seconds() / 86400
        return {"name": row.name, "type": row.cert_type, "active": row.active, "builtin": row.builtin,
                "not_after": row.not_after.isoformat(), "days_left": int(days // 1), "added_by": row.added_by}

    def list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            rows = s.scalars(select(Certificate).order_by(Certificate.cert_type, Certificate.name))
            return [self._summary(r) for r in rows]

    def show(self, name: str) -> dict:
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            summary, pem = self._summary(row), row.cert_pem
            created = row.created_at.isoformat() if row.created_at else None
        return {**summary, **tls.describe_stored(pem),
                "missing_names": self._missing(pem, self.expected_names(summary["type"])),
                "created_at": created, "used_by": self._used_by(summary["type"])}

    @staticmethod
    def _used_by(cert_type: str) -> str:
        return ("nginx, postfix and dovecot (applied by the next `rupost deploy`)" if cert_type == "mail"
                else "the control panel (read when the rupost service starts; restart it on every node)")

    def add(self, name: str, cert_type: str, cert_path: str, key_path: str, login: str | None = None,
            activate: bool = False) -> dict:
        _check_name(name, "certificate")
        if cert_type not in CERT_TYPES:
            raise ValidationError(f"invalid certificate type {cert_type!r}: use mail or control_panel")
        if name in BUILTIN_CERT_TYPES:
            raise ConflictError(f"{name} is the name of a builtin certificate: choose another name")
        cert_text = read_upload(cert_path, "certificate file")
        key_text = read_upload(key_path, "key file")
        try:
            info = tls.validate_certificate(cert_text, key_text, self.required_names(cert_type))
        except ValueError as exc:
            raise ValidationError(f"certificate {name} rejected: {exc}") from None
        with self.app.dbs.session("main") as s:
            if s.scalar(select(Certificate.id).where(Certificate.name == name)) is not None:
                raise ConflictError(f"a certificate named {name} already exists: remove it first or choose "
                                    "another name")
            if activate:
                for other in s.scalars(select(Certificate).where(Certificate.cert_type == cert_type,
                                                                 Certificate.active)):
                    other.active = False
                s.flush()
            s.add(Certificate(name=name, cert_type=cert_type, cert_pem=info.cert_pem, key_pem=info.key_pem,
                              builtin=False, active=activate, not_after=info.chain_not_after,
                              added_by=login or self.app.actor))
        self.app.audit.record("cert.add", name, cert_type=cert_type, subject=info.subject, sha256=info.sha256,
                              login=login or self.app.actor, active=activate)
        return {"name": name, "type": cert_type, "active": activate, "subject": info.subject,
                "names": info.names, "key_type": info.key_type, "not_after": info.not_after.isoformat(),
                "chain": info.chain, "warnings": info.warnings, "used_by": self._used_by(cert_type)}

    def activate(self, name: str) -> dict:
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            if not row.builtin:
                # re-checked: it may have expired, or the mail host may have changed, since the import
                try:
                    tls.validate_certificate(row.cert_pem, row.key_pem, self.required_names(row.cert_type))
                except ValueError as exc:
                    raise ValidationError(f"certificate {name} cannot be activated: {exc}") from None
            elif row.not_after <= dt.datetime.now(dt.UTC):
                raise ValidationError(f"builtin certificate {name} has expired: run "
                                      f"`rupost cert regenerate-builtin {name}` first")
            for other in s.scalars(select(Certificate).where(Certificate.cert_type == row.cert_type,
                                                             Certificate.active, Certificate.id != row.id)):
                other.active = False
            s.flush()
            row.active = True
            cert_type = row.cert_type
        self.app.audit.record("cert.activate", name, cert_type=cert_type)
        return {"name": name, "type": cert_type, "used_by": self._used_by(cert_type)}

    def remove(self, name: str) -> None:
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            if row.builtin:
                raise ConflictError(f"{name} is a builtin certificate and is kept as the fallback; "
                                    f"to renew it run `rupost cert regenerate-builtin {name}`")
            if row.active:
                raise ConflictError(f"{name} is the active {row.cert_type} certificate: activate another one "
                                    "first (e.g. the builtin one)")
            s.delete(row)
        self.app.audit.record("cert.remove", name)

    def regenerate_builtin(self, name: str) -> dict:
        if name not in BUILTIN_CERT_TYPES:
            raise ValidationError(f"{name} is not a builtin certificate (builtin: "
                                  f"{', '.join(BUILTIN_CERT_TYPES)})")
        names = self.builtin_names()
        cert_pem, key_pem, not_after = tls.self_signed(names[0], names)
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(Certificate).where(Certificate.name == name))
            if row is None:
                row = Certificate(name=name, cert_type=BUILTIN_CERT_TYPES[name], builtin=True, active=False)
                s.add(row)
            row.cert_pem, row.key_pem, row.not_after = cert_pem, key_pem, not_after
            row.added_by = self.app.actor
            active, cert_type = bool(row.active), row.cert_type
        self.app.audit.record("cert.regenerate_builtin", name)
        return {"name": name, "type": cert_type, "active": active, "not_after": not_after.isoformat(),
                "names": names, "used_by": self._used_by(cert_type)}

    def expiry_warnings(self, now: dt.datetime | None = None) -> builtins.list[dict]:
        """Certificates that expire within 30 days (level warning), 7 days (critical), or expired."""
        now = now or dt.datetime.now(dt.UTC)
        out = []
        with self.app.dbs.session("main") as s:
            for row in s.scalars(select(Certificate).order_by(Certificate.not_after)):
                left = row.not_after - now
                if left > dt.timedelta(days=WARN_DAYS):
                    continue
                level = ("expired" if left.total_seconds() <= 0 else
                         "critical" if left <= dt.timedelta(days=CRITICAL_DAYS) else "warning")
                days = int(left.total_seconds() // 86400)
                text = (f"certificate {row.name} ({row.cert_type}{', active' if row.active else ''}) "
                        + (f"expired on {row.not_after:%Y-%m-%d}" if level == "expired"
                           else f"expires on {row.not_after:%Y-%m-%d} ({days} days left)"))
                out.append({"name": row.name, "type": row.cert_type, "active": row.active, "level": level,
                            "days_left": days, "not_after": row.not_after.isoformat(), "message": text})
        return out


class DHParamService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            return [{"name": r.name, "bits": r.bits, "active": r.active, "builtin": r.name == BUILTIN_DHPARAM,
                     "created_at": r.created_at.isoformat() if r.created_at else None}
                    for r in s.scalars(select(DHParam).order_by(DHParam.name))]

    def import_file(self, path: str, name: str | None = None) -> dict:
        """Validate, store (replacing a set of the same name) and activate; a redeploy applies it."""
        text = read_upload(path, "DH parameters file")
        name = name or Path(path).name
        if name == BUILTIN_DHPARAM:
            # the guide's own example imports a file of that name: keep the RFC 7919 set as
            # the fallback and store the administrator's under a distinct name
            name = f"imported-{name}"
        _check_name(name, "DH parameters")
        try:
            pem, bits = tls.validate_dhparam(text)
        except ValueError as exc:
            raise ValidationError(f"DH parameters {path} rejected: {exc}") from None
        with self.app.dbs.session("main") as s:
            for other in s.scalars(select(DHParam).where(DHParam.active)):
                other.active = False
            s.flush()
            row = s.scalar(select(DHParam).where(DHParam.name == name))
            if row is None:
                row = DHParam(name=name)
                s.add(row)
            row.pem, row.bits, row.active = pem, bits, True
        self.app.audit.record("dhparam.import", name, bits=bits)
        return {"name": name, "bits": bits, "active": True}

    def activate(self, name: str) -> dict:
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(DHParam).where(DHParam.name == name))
            if row is None:
                known = ", ".join(s.scalars(select(DHParam.name).order_by(DHParam.name))) or "none"
                raise NotFoundError(f"no DH parameters named {name!r} (known: {known})")
            for other in s.scalars(select(DHParam).where(DHParam.active, DHParam.id != row.id)):
                other.active = False
            s.flush()
            row.active = True
            bits = row.bits
        self.app.audit.record("dhparam.activate", name)
        return {"name": name, "bits": bits, "active": True}

    def remove(self, name: str) -> None:
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(DHParam).where(DHParam.name == name))
            if row is None:
                raise NotFoundError(f"no DH parameters named {name!r}")
            if name == BUILTIN_DHPARAM:
                raise ConflictError(f"{name} (RFC 7919 ffdhe3072) is the builtin fallback and is kept")
            if row.active:
                raise ConflictError(f"{name} is active: activate another set first "
                                    f"(e.g. `rupost dhparam activate {BUILTIN_DHPARAM}`)")
            s.delete(row)
        self.app.audit.record("dhparam.remove", name)
