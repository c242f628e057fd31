"""Queue requests relayed between nodes: an action on another node's queue runs on that node.

Only the node that owns a queue acts on it (its queue manager works on the files). The
requester writes a ``queue_requests`` row (rupost database) and a NOTIFY on ``rupost_queue``;
the owning node's agent claims the row, checks the action and its arguments again, runs it
through the mail queue service acting as the administrator who asked (journalled there with
the requesting node and the panel client's address) and writes the result into the row,
which the requester waits for with a timeout. A request not picked up in time is marked
expired and is never run later.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING

from sqlalchemy import func, text

from ..db.queue_request_models import QueueRequest
from ..errors import ConflictError, NotFoundError, RuPostError, ServiceError, ValidationError

if TYPE_CHECKING:
    from ..services import Services

CHANNEL = "rupost_queue"
RELAYED = ("list", "show", "hold", "release", "delete", "requeue", "flush")
RELAY_TIMEOUT = 30.0  # seconds a requester waits for the owning node by default
MAX_RELAY_TIMEOUT = 600.0
RELAY_LIST_LIMIT = 10000  # messages a relayed list brings back per node (the rest is counted)
PURGE_AFTER_HOURS = 24  # finished request rows are kept this long (for inspection), then deleted
PURGE_EVERY = 600.0
_ERRORS = {cls.__name__: cls for cls in (ValidationError, NotFoundError, ConflictError, ServiceError)}


class QueueRelay:
    def __init__(self, app: Services) -> None:
        self.app = app
        self._purged_at: float | None = None

    # ------------------------------------------------------------ the requester's side
    def ask(self, node: str, action: str, arguments: dict, timeout: float) -> dict:
        answer = self.ask_many({node: (action, arguments)}, timeout)[node]
        if isinstance(answer, RuPostError):
            raise answer
        return answer

    def ask_many(self, requests: dict[str, tuple[str, dict]], timeout: float) -> dict:
        """Ask each node's core for one queue request at once and wait for all of them;
        node -> its result, or the RuPostError to report for it."""
        from ..services.queue_messages import check_arguments

        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 1 <= timeout <= MAX_RELAY_TIMEOUT:
            raise ValidationError(f"invalid timeout {timeout!r}: from 1 to {int(MAX_RELAY_TIMEOUT)} seconds")
        # bad input is refused here, before anything is asked of any node
        checked = {node: (action, check_arguments(action, arguments)) for node, (action, arguments) in requests.items()}
        answers: dict[str, object] = {}
        pending = self._file(checked, timeout, answers)
        self._wait(pending, timeout, answers)
        return answers

    def _file(self, checked: dict[str, tuple[str, dict]], timeout: float, answers: dict[str, object]) -> dict[int, str]:
        """One request row per node whose agent runs (request id -> node); the others get their
        error in `answers` at once."""
        pending: dict[int, str] = {}
        address, source = self.app.acting.address, self.app.acting.source
        with self.app.dbs.session("main") as s:
            for node, (action, arguments) in checked.items():
                try:
                    info = self.app.nodes.show(node)  # NotFoundError names the registered nodes
                except NotFoundError as exc:
                    answers[node] = exc
                    continue
                if not self.app.nodes.agent_alive(info):
                    answers[node] = ServiceError(
                        f"node {node} did not answer: its node agent (`rupost run`) is not running "
                        f"(last report {info['last_heartbeat'] or 'never'}), so it cannot act on its queue; "
                        f"nothing was changed there. Start its agent, or run `rupost mailqueues {action}` on {node}")
                    continue
                row = QueueRequest(node_name=node, action=action, arguments=arguments, status="requested",
                                   requested_by=self.app.actor[:128], requested_from=self.app.config.node_name[:128],
                                   source=source, address=(address or "")[:64], error="",
                                   expires_at=func.now() + dt.timedelta(seconds=timeout))
                s.add(row)
                s.flush()
                pending[row.id] = node
                s.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": node})
        return pending

    def _wait(self, pending: dict[int, str], timeout: float, answers: dict[str, object]) -> None:
        """Poll the rows until each is answered or the timeout expires them."""
        deadline = time.monotonic() + timeout
        pause = 0.05
        while pending:
            with self.app.dbs.session("main") as s:
                rows = s.execute(text("SELECT id, status, result, error FROM queue_requests WHERE id = ANY(:ids)"),
                                 {"ids": list(pending)}).all()
            for rid, status, result, error in rows:
                if status == "done":
                    answers[pending.pop(rid)] = result
                elif status == "failed":
                    node = pending.pop(rid)
                    kind = _ERRORS.get(str((result or {}).get("error_class")), ServiceError)
                    answers[node] = kind(error if f"node {node}" in error else f"node {node}: {error}")
            if not pending:
                break
            if time.monotonic() >= deadline:
                for rid, node in list(pending.items()):
                    answers[node] = self._expire(rid, node, timeout)
                    pending.pop(rid)
                break
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def _expire(self, rid: int, node: str, timeout: float) -> RuPostError:
        with self.app.dbs.session("main") as s:
            expired = s.execute(text("UPDATE queue_requests SET status = 'expired', finished_at = now(), "
                                     "error = 'no answer within the timeout' WHERE id = :id AND status = 'requested' "
                                     "RETURNING id"), {"id": rid}).first()
        if expired is not None:
            return ServiceError(f"node {node} did not answer within {timeout:g} s: its node agent did not pick up "
                                f"the request (is `rupost run` running on {node}, and can it reach the database?); "
                                "nothing was changed there")
        return ServiceError(f"node {node} did not answer within {timeout:g} s: it started the request and has not "
                            f"finished it yet; see `rupost mailqueues list --node {node}` and the audit journal "
                            "for the outcome")

    # ------------------------------------------------------------ the owning node's side (its agent)
    def serve(self) -> int:
        """Run the queue requests other nodes made for this node's queue; returns how many."""
        me = self.app.config.node_name
        served = 0
        self._purge()
        while True:
            with self.app.dbs.session("main") as s:
                row = s.execute(text(
                    "UPDATE queue_requests SET status = 'running', started_at = now() WHERE id = ("
                    " SELECT id FROM queue_requests WHERE node_name = :me AND status = 'requested'"
                    " AND expires_at > now() ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                    "RETURNING id, action, arguments, requested_by, requested_from, source, address"),
                    {"me": me}).mappings().first()
            if row is None:
                return served
            served += 1
            result, error = None, ""
            try:
                result = self._execute(dict(row))
                status = "done"
            except RuPostError as exc:
                status, error, result = "failed", str(exc), {"error_class": type(exc).__name__}
            except Exception as exc:  # noqa: BLE001 - the requester must get an answer, not a timeout
                status, error = "failed", f"internal error on node {me}: {type(exc).__name__}: {exc}"
                result = {"error_class": "ServiceError"}
            with self.app.dbs.session("main") as s:
                s.execute(text("UPDATE queue_requests SET status = :st, result = CAST(:res AS jsonb), error = :err, "
                               "finished_at = now() WHERE id = :id"),
                          {"st": status, "res": json.dumps(result), "err": error[:10000], "id": row["id"]})

    def _execute(self, req: dict) -> dict:
        """One relayed request, checked again here, run on this node as the administrator who asked."""
        from ..services import Actor
        from ..services.queue_messages import check_arguments

        action = req["action"]
        arguments = check_arguments(action, req["arguments"])
        details = {"requested_from": req["requested_from"], "request": req["id"]}
        if req["address"]:
            details["address"] = req["address"]
        requester = Actor(req["requested_by"] or "?", req["source"] or "cli", details=details)
        service = self.app.as_actor(requester).mailqueues
        if action == "list":
            return service.list(match=arguments.get("match"), limit=arguments.get("limit", RELAY_LIST_LIMIT))
        if action == "show":
            return service.show(arguments["ids"][0], headers_only=arguments["headers_only"])
        if action == "flush":
            return service.flush(arguments.get("ids"))
        return service.act(action, ids=arguments.get("ids"), match=arguments.get("match"))

    def _purge(self) -> None:
        now = time.monotonic()
        if self._purged_at is not None and now - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = now
        with self.app.dbs.session("main") as s:
            s.execute(text("DELETE FROM queue_requests WHERE created_at < now() - make_interval(hours => :h)"),
                      {"h": PURGE_AFTER_HOURS})
