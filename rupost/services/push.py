"""Push notifications for mobile clients: HTTP endpoints that receive new-mail events.

Dovecot's push_notification plugin (Lua driver, adapters/dovecot_push.py) spools one
JSON event per delivered message into ``<state>/push/new``. The dispatcher
(``rupost push dispatch``, one per node) posts each event to every enabled endpoint
whose domains match, as JSON. A failed post (connection error, timeout, non-2xx) is
written to ``rupost_logs.push_deliveries`` and retried with exponential backoff
(2, 4, 8, 16 s ...) up to MAX_ATTEMPTS; the last failure is marked final. Events
older than MAX_AGE are dropped (a push is only useful while it is fresh).
"""
from __future__ import annotations

import builtins
import datetime as dt
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import func, select

from .. import __version__, validation
from ..db.ops_models import PushDelivery, PushEndpoint
from ..errors import ConflictError, NotFoundError, RuPostError, ValidationError
from . import features

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from . import Services

MAX_ATTEMPTS = 5
MAX_AGE = 3600.0
TIMEOUT = 5.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class PushError(RuPostError):
    """A test delivery to an endpoint failed."""


def backoff(attempt: int) -> float:
    return float(min(300, 2 ** attempt))


class PushService:
    def __init__(self, app: Services) -> None:
        self.app = app

    @property
    def spool(self) -> Path:
        return self.app.layout.state / "push"

    # ------------------------------------------------------------ endpoints
    @staticmethod
    def _check_url(url: str) -> str:
        url = (url or "").strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            raise ValidationError(f"{url!r} is not an http:// or https:// URL")
        try:
            _ = parts.port  # raises on a bad port
        except ValueError:
            raise ValidationError(f"{url!r}: invalid port") from None
        return url

    def add(self, name: str, url: str, domains: Sequence[str] = (), secret: str = "") -> dict:
        if not _NAME.match(name or ""):
            raise ValidationError(f"invalid endpoint name {name!r}: lower-case letters, digits, '.', '_', '-'")
        url = self._check_url(url)
        doms = sorted({validation.domain_name(d) for d in domains})
        if any(c in secret for c in "\r\n"):
            raise ValidationError("the secret cannot contain a line break")
        with self.app.dbs.session("main") as s:
            if s.scalar(select(PushEndpoint.id).where(PushEndpoint.name == name)) is not None:
                raise ConflictError(f"push endpoint {name} already exists (rupost push remove {name} first)")
            row = PushEndpoint(name=name, url=url, secret=secret, domains=doms, enabled=True,
                               created_by=self.app.actor)
            s.add(row)
            s.flush()
            out = self._as_dict(row)
        self.app.audit.record("push.add", name, url=url, domains=doms)
        return out

    def remove(self, name: str) -> None:
        with self.app.dbs.session("main") as s:
            s.delete(self._row(s, name))
        self.app.audit.record("push.remove", name)

    def _row(self, s: Session, name: str) -> PushEndpoint:
        row = s.scalar(select(PushEndpoint).where(PushEndpoint.name == name))
        if row is None:
            known = ", ".join(s.scalars(select(PushEndpoint.name).order_by(PushEndpoint.name))) or "none"
            raise NotFoundError(f"no push endpoint named {name!r} (known: {known})")
        return row

    def template_context(self) -> dict:
        """``push.enabled`` for templates: dovecot loads its push plugins (which fetch each new
        message's headers and snippet and spool an event) only when someone will receive the
        events, so a node without endpoints pays nothing per delivery."""
        with self.app.dbs.session("main") as s:
            return {"enabled": s.scalar(select(PushEndpoint.id).where(PushEndpoint.enabled).limit(1)) is not None}

    def live_on_this_node(self) -> bool:
        """Whether this node's live generation loads dovecot's push plugins."""
        return features.live_on_this_node(self.app, "dovecot", "push.lua")

    def deploy_hint(self) -> str:
        return features.deploy_hint("dovecot's push plugin", self.template_context()["enabled"],
                                    self.live_on_this_node())

    def endpoints(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            return [self._as_dict(r) for r in s.scalars(select(PushEndpoint).order_by(PushEndpoint.name))]

    def list(self) -> list[dict]:
        """Endpoints with their failures of the last 24 hours."""
        rows = self.endpoints()
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)
        with self.app.dbs.session("logs") as s:
            counts = dict(s.execute(select(PushDelivery.endpoint, func.count()).where(PushDelivery.at >= since)
                                    .group_by(PushDelivery.endpoint)).all())
            for r in rows:
                last = s.scalar(select(PushDelivery).where(PushDelivery.endpoint == r["name"])
                                .order_by(PushDelivery.id.desc()).limit(1))
                r["failures_24h"] = counts.get(r["name"], 0)
                r["last_failure"] = f"{last.at:%Y-%m-%d %H:%M:%S} {last.error}" if last else ""
        return rows

    @staticmethod
    def _as_dict(r: PushEndpoint) -> dict:
        return {"name": r.name, "url": r.url, "domains": list(r.domains or []), "enabled": r.enabled,
                "secret": "set" if r.secret else "", "created_by": r.created_by}

    def failures(self, limit: int = 50, endpoint: str | None = None) -> builtins.list[dict]:
        with self.app.dbs.session("logs") as s:
            query = select(PushDelivery).order_by(PushDelivery.id.desc()).limit(limit)
            if endpoint:
                query = query.where(PushDelivery.endpoint == endpoint)
            return [{"at": r.at.isoformat(), "node": r.node, "endpoint": r.endpoint, "user": r.username,
                     "mailbox": r.mailbox, "uid": r.uid, "attempt": r.attempt, "status": r.status,
                     "final": r.final, "error": r.error} for r in s.scalars(query)]

    # -------------------------------------------------------------- posting
    def _post(self, endpoint: dict, secret: str, event: dict) -> tuple[bool, int | None, str]:
        body = json.dumps(event, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"RuPost/{__version__} push",
                   "X-RuPost-Event": str(event.get("event", ""))}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        req = urllib.request.Request(endpoint["url"], data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return True, resp.status, ""
        except urllib.error.HTTPError as exc:
            return False, exc.code, f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return False, None, f"{reason}"

    def _targets(self, user: str) -> builtins.list[tuple[dict, str]]:
        domain = user.rsplit("@", 1)[-1].lower()
        with self.app.dbs.session("main") as s:
            rows = s.scalars(select(PushEndpoint).where(PushEndpoint.enabled).order_by(PushEndpoint.name)).all()
            return [(self._as_dict(r), r.secret) for r in rows if not r.domains or domain in r.domains]

    def test(self, name: str) -> dict:
        with self.app.dbs.session("main") as s:
            row = self._row(s, name)
            endpoint, secret = self._as_dict(row), row.secret
        event = {"event": "Test", "user": "", "mailbox": "", "node": self.app.config.node_name,
                 "id": f"test-{uuid.uuid4().hex[:12]}", "sent_at": int(time.time())}
        ok, status, error = self._post(endpoint, secret, event)
        if not ok:
            self._log_failure(endpoint["name"], event, 1, status, error, final=True)
            raise PushError(f"push endpoint {name} ({endpoint['url']}) failed: {error}")
        return {"endpoint": name, "status": status}

    def _log_failure(self, endpoint: str, event: dict, attempt: int, status: int | None, error: str,
                     final: bool) -> None:
        with self.app.dbs.session("logs") as s:
            s.add(PushDelivery(node=self.app.config.node_name, endpoint=endpoint, username=event.get("user", ""),
                               mailbox=event.get("mailbox", ""), uid=event.get("uid"), attempt=attempt, status=status,
                               final=final, error=error[:1000]))

    # ----------------------------------------------------------- dispatcher
    def dispatch_once(self, now: float | None = None) -> dict:
        """Post every spooled event that is due; returns counts."""
        now = time.time() if now is None else now
        new, retry = self.spool / "new", self.spool / "retry"
        retry.mkdir(parents=True, exist_ok=True)
        stats = {"events": 0, "posted": 0, "failed": 0, "dropped": 0}
        due = sorted(new.glob("*.json")) if new.is_dir() else []
        for path in sorted(retry.glob("*.json")):
            try:
                if json.loads(path.read_text()).get("next_at", 0) <= now:
                    due.append(path)
            except (OSError, ValueError):
                due.append(path)
        for path in due:
            stats["events"] += 1
            try:
                record = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
            except (OSError, ValueError) as exc:
                self._log_failure("-", {}, 1, None, f"unreadable event {path.name}: {exc}", final=True)
                path.unlink(missing_ok=True)
                stats["dropped"] += 1
                continue
            in_retry = path.parent == retry
            event = record["event"] if in_retry else record
            event.setdefault("id", path.name.removesuffix(".json"))
            event.setdefault("node", self.app.config.node_name)
            attempt = record.get("attempt", 0) + 1 if in_retry else 1
            if now - float(event.get("spooled_at") or now) > MAX_AGE:
                path.unlink(missing_ok=True)
                stats["dropped"] += 1
                continue
            targets = self._targets(event.get("user", ""))
            if in_retry:
                pending = set(record.get("pending", []))
                targets = [t for t in targets if t[0]["name"] in pending]
            failed = []
            for endpoint, secret in targets:
                ok, status, error = self._post(endpoint, secret, event)
                if ok:
                    stats["posted"] += 1
                    continue
                stats["failed"] += 1
                final = attempt >= MAX_ATTEMPTS
                self._log_failure(endpoint["name"], event, attempt, status,
                                  error + ("" if not final else f" (gave up after {attempt} attempts)"), final)
                if not final:
                    failed.append(endpoint["name"])
            if failed:
                out = retry / path.name
                tmp = retry / (path.name + ".tmp")
                tmp.write_text(json.dumps({"event": event, "pending": failed, "attempt": attempt,
                                           "next_at": now + backoff(attempt)}))
                os.replace(tmp, out)
                if path != out:
                    path.unlink(missing_ok=True)
            else:
                path.unlink(missing_ok=True)
        return stats

    def run(self, interval: float = 1.0, stop: Callable[[], bool] | None = None) -> None:
        """The dispatcher loop (what `rupost push dispatch` runs)."""
        while not (stop and stop()):
            try:
                self.dispatch_once()
            except RuPostError:
                pass  # the database may be down: the events wait in the spool
            time.sleep(interval)
