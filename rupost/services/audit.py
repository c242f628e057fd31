"""The audit journal in rupost_logs: who changed what, when, from where."""
from __future__ import annotations

from sqlalchemy import select

from ..db.models import AuditRecord


class AuditService:
    def __init__(self, app):
        self.app = app

    def record(self, action: str, target: str = "", source: str = "cli", **details) -> None:
        with self.app.dbs.session("logs") as s:
            s.add(AuditRecord(actor=self.app.actor, source=source, action=action, target=target, details=details))

    def recent(self, limit: int = 50) -> list[dict]:
        with self.app.dbs.session("logs") as s:
            rows = s.scalars(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)).all()
            return [{"at": r.at.isoformat(), "actor": r.actor, "source": r.source, "action": r.action,
                     "target": r.target, "details": r.details} for r in rows]
