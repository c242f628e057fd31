"""The audit journal in rupost_logs: who changed what, when, from where."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..db.models import AuditRecord

if TYPE_CHECKING:
    import datetime as dt

    from . import Services


class AuditService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def record(self, action: str, target: str = "", source: str | None = None, **details: Any) -> None:
        """One journal row: by the acting actor, from its face unless `source` names another,
        with its address and relayed details."""
        acting = self.app.acting
        details = {**details, **acting.details}
        if acting.address is not None:
            details.setdefault("address", acting.address)
        with self.app.dbs.session("logs") as s:
            s.add(AuditRecord(actor=self.app.actor, source=source or acting.source, action=action, target=target,
                              details=details))

    def page(self, actor: str | None = None, action: str | None = None, target: str | None = None,
             source: str | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None, limit: int | None = 100, offset: int = 0,
             with_total: bool = True, before_id: int | None = None) -> dict:
        """Records newest first, filtered in SQL (actor/source exact, action prefix, target substring,
        `since`/`until` datetimes); `limit=None` returns every matching record (CSV export);
        `with_total=False` skips counting the matches (total None); `before_id` pages by id (exports)."""
        conditions = []
        if actor:
            conditions.append(AuditRecord.actor == actor)
        if source:
            conditions.append(AuditRecord.source == source)
        if action:
            conditions.append(AuditRecord.action.startswith(action, autoescape=True))
        if target:
            conditions.append(AuditRecord.target.contains(target, autoescape=True))
        if before_id is not None:
            conditions.append(AuditRecord.id < before_id)
        if since is not None:
            conditions.append(AuditRecord.at >= since)
        if until is not None:
            conditions.append(AuditRecord.at < until)
        query = select(AuditRecord).where(*conditions).order_by(AuditRecord.id.desc()).offset(max(0, offset))
        if limit is not None:
            query = query.limit(max(1, min(limit, 1000)))
        with self.app.dbs.session("logs") as s:
            total = s.scalar(select(func.count()).select_from(AuditRecord).where(*conditions)) if with_total else None
            rows = [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "source": r.source, "action": r.action,
                     "target": r.target, "details": r.details} for r in s.scalars(query)]
            return {"rows": rows, "total": total}

    def monitor_events(self, limit: int = 20, problems_only: bool = True) -> list[dict]:
        """The node agents' recent monitor events (rupost_logs.monitor_events), newest first."""
        from ..db.models import MonitorEvent

        query = select(MonitorEvent).order_by(MonitorEvent.id.desc()).limit(limit)
        if problems_only:
            routine = ("in_service", "started", "stopped", "enabled", "rollout")
            query = query.where(MonitorEvent.state.notin_(routine))
        with self.app.dbs.session("logs") as s:
            return [{"at": e.at.isoformat(), "node": e.node, "component": e.component, "state": e.state,
                     "message": e.message} for e in s.scalars(query)]

    def recent(self, limit: int = 50) -> list[dict]:
        with self.app.dbs.session("logs") as s:
            rows = s.scalars(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)).all()
            return [{"at": r.at.isoformat(), "actor": r.actor, "source": r.source, "action": r.action,
                     "target": r.target, "details": r.details} for r in rows]
