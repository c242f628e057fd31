"""Peak concurrent sessions per hour of each public listener (issue 25: "rupost stats keeps peak
concurrent sessions per hour"), kept in ``rupost_logs.session_peaks_hourly``.

The node agent samples HAProxy every interval (rupost/node/agent.py): HAProxy sees every
session of a listener, and its frontend counters give the sessions held now (scur) and the
most held at once since the previous sample (smax, reset by the same runtime-API call that
read it). The greater of the two is the interval's peak, so a burst that opened and closed
between two samples still counts; each hour keeps the greatest of its intervals. A peak that
spans two hours counts in both. Rows older than the statistics retention are removed.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from ..db.stats_models import SessionPeakHourly
from ..templating.limits import LISTENER_LOAD

if TYPE_CHECKING:
    from . import Services

LISTENERS = tuple(LISTENER_LOAD)  # imaps, smtp, submissions, https, http, sieve


class SessionPeakService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def record(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Sample this node's HAProxy and keep the peaks of the current hour; the sampled peak
        of each listener (nothing when nothing is deployed here). OSError/ValueError when
        HAProxy's runtime API does not answer."""
        from adapters import haproxy

        if not self.app.layout.current.exists():
            return {}
        stats = haproxy.proxy_stats(self.app.layout, clear_max=True)
        peaks = {}
        for listener in LISTENERS:
            row = stats.get((f"fe_{listener}", "FRONTEND"))
            if row is not None:
                peaks[listener] = max(int(row.get("scur") or 0), int(row.get("smax") or 0))
        if not peaks:
            return {}
        now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        hour = now.replace(minute=0, second=0, microsecond=0)
        node = self.app.config.node_name
        stmt = insert(SessionPeakHourly).values(
            [{"hour": hour, "node": node, "listener": name, "peak": peak} for name, peak in peaks.items()])
        stmt = stmt.on_conflict_do_update(
            constraint="uq_session_peaks_hourly_hour_node_listener",
            set_={"peak": func.greatest(SessionPeakHourly.peak, stmt.excluded.peak)})
        with self.app.dbs.session("logs") as s:
            s.execute(stmt)
            s.execute(delete(SessionPeakHourly).where(
                SessionPeakHourly.hour < now - dt.timedelta(days=self.app.stats.retention_days())))
        return peaks

    def series(self, hours: int = 24, node: str | None = None, end: dt.datetime | None = None) -> dict:
        """Per hour (oldest first, zero-filled) and listener: the peak of one node, or with no
        node the sum of the nodes' peaks (an upper bound of the cluster's: nodes peak at
        different moments); and each listener's greatest over the window."""
        start, last = self.app.stats._window(hours, end)
        conds = [SessionPeakHourly.hour >= start, SessionPeakHourly.hour <= last]
        if node:
            conds.append(SessionPeakHourly.node == node)
        with self.app.dbs.session("logs") as s:
            rows = s.execute(select(SessionPeakHourly.hour, SessionPeakHourly.listener,
                                    func.sum(SessionPeakHourly.peak)).where(*conds)
                             .group_by(SessionPeakHourly.hour, SessionPeakHourly.listener)).all()
        labels = [start + dt.timedelta(hours=i) for i in range(hours)]
        index = {h: i for i, h in enumerate(labels)}
        series = {name: [0] * hours for name in LISTENERS}
        for hour, listener, peak in rows:
            if listener in series:
                series[listener][index[hour.astimezone(dt.UTC)]] = int(peak)
        return {"hours": [h.isoformat() for h in labels], "series": series,
                "peaks": {name: max(values) for name, values in series.items()}, "node": node,
                "from": start.isoformat(), "to": (last + dt.timedelta(hours=1)).isoformat()}
