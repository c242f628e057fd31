"""Mail queue inspection and actions: the postfix queue of this node and of the cluster's nodes.

Everything goes through postfix's own tools, pointed at the node's postfix instance with
``-c CONFIG_DIR`` (the live generation's ``postfix`` directory, as the daemon itself runs):
``postqueue -j`` lists, ``postcat -q`` shows, ``postsuper -h/-H/-d/-r`` hold, release, delete
and requeue, ``postqueue -f``/``-i`` flush.

Other nodes of a cluster: their queue directory is on shared storage (``nodes.queue_directory``),
so this core *reads* another node's queue through a scratch configuration directory whose
``queue_directory`` points at it (``postqueue`` then talks to that queue's showq service, or
reads the files directly when it cannot: "accessing queue directly"). A node whose queue
directory is not mounted here is read through that node's core instead (below).

Actions (hold, release, delete, requeue, flush) change a queue that the owning host's queue
manager works on, so only the owning node executes them. Asked from another node, the action
is *relayed*: a ``queue_requests`` row (rupost database) and a NOTIFY on ``rupost_queue``; the
owning node's agent (``rupost run``) claims the row, checks the action against a whitelist and
its arguments again (queue ids, filters), runs it through this same service on its own queue,
audits it there (the administrator who asked, the requesting node, the panel client's address)
and writes the result into the row, which the requester waits for with a timeout
(rupost/cluster/queue_relay.py). A request not picked up in time is marked expired and is
never run later. Listing and showing another node's queue are relayed the same way when its
queue directory is not on shared storage here.
"""
from __future__ import annotations

import builtins
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from adapters import postfix

from ..cluster.queue_relay import RELAY_LIST_LIMIT, RELAY_TIMEOUT
from ..errors import NotFoundError, RuPostError, ServiceError, ValidationError

if TYPE_CHECKING:
    from . import Services

from .queue_messages import (
    ACTIONS,
    MAX_SHOW,
    TOOL_TIMEOUT,
    QueueFilter,
    QueueMessage,
    check_ids,
    per_queue,
    queue_message,
)

# what postsuper prints per message: "postsuper: 0A852260D43: placed on hold"
_POSTSUPER_DONE = re.compile(r"^postsuper: ([0-9A-Za-z]+): (placed on hold|released from hold|removed|requeued)$")


class MailQueueService:
    def __init__(self, app: Services) -> None:
        self.app = app

    # ------------------------------------------------------------ where the queue is
    def local_config_dir(self) -> Path:
        conf = self.app.layout.component_config("postfix")
        if not (conf / "main.cf").exists():
            raise NotFoundError("postfix is not deployed on this node yet: run rupost deploy")
        return conf

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                                  errors="replace")
        except FileNotFoundError:
            raise ServiceError(f"{argv[0]} is not installed (Debian package postfix)") from None
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{' '.join(argv[:3])} did not answer within {TOOL_TIMEOUT} s") from None

    @staticmethod
    def _errors(proc: subprocess.CompletedProcess) -> str:
        lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip() and ": warning: " not in ln
                 and "Mail system is down" not in ln]
        return "; ".join(lines) or (proc.stdout or "").strip()[:500] or f"exit code {proc.returncode}"

    def _read_queue(self, conf: Path, node: str) -> list[QueueMessage]:
        proc = self._run(["postqueue", "-c", str(conf), "-j"])
        if proc.returncode != 0:
            raise ServiceError(f"postqueue -j on node {node}: {self._errors(proc)}")
        now = time.time()
        out: list[QueueMessage] = []
        for line in proc.stdout.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(queue_message(json.loads(line), node, now))
            except ValueError:
                raise ServiceError(f"postqueue -j on node {node}: unexpected output line: {line[:200]}") from None
        out.sort(key=lambda m: (m["arrival"] or "", m["id"]))
        return out

    def _scratch_conf(self, queue_dir: Path) -> Path:
        """A configuration directory that names another node's queue, for reading it."""
        work = Path(tempfile.mkdtemp(prefix="rupost-queue-"))
        for name, content in postfix.render_queue_view(queue_dir).items():
            (work / name).write_text(content)
        return work

    def _me(self) -> str:
        return self.app.config.node_name

    def _shared_queue(self, name: str) -> Path | None:
        """Another node's queue directory when it is reachable here (shared storage), else None."""
        info = self.app.nodes.show(name)  # NotFoundError names the registered nodes
        queue_dir = Path(info["queue_directory"] or "")
        if info["queue_directory"] and (queue_dir / "deferred").is_dir():
            return queue_dir
        return None

    # ------------------------------------------------------------ reading
    def list(self, node: str | None = None, cluster: bool = False, match: list[str] | None = None,
             timeout: float = RELAY_TIMEOUT, limit: int | None = None) -> dict:
        """{"messages": [...], "nodes": [{"node", "reachable", "count", "matched", "queues",
        "truncated", "error", "via"}]}: per node, ``count`` messages in its queue, ``matched`` by
        the filter (``queues``: how many of those in each postfix queue), of which the list has
        the first ``limit`` (``truncated`` when it has fewer).

        Default: this node. ``node``: that registered node. ``cluster``: every registered node.
        Another node's queue is read through its queue directory on shared storage, or else
        asked from its core (``via``: "local", "shared storage" or "relay"); a relayed list
        travels through the database, so it brings back at most RELAY_LIST_LIMIT messages."""
        flt = QueueFilter.parse(match) if match else None
        targets = self._targets(node, cluster)
        found, status, relay = self._read_direct(targets, cluster)
        if relay:
            self._read_relayed(relay, match, limit, timeout, cluster, found, status)
        messages: builtins.list[QueueMessage] = []
        for name in targets:
            if name not in found:
                continue
            if name not in relay:  # a relayed list comes filtered and capped by its node
                mine = [m for m in found[name] if flt is None or flt.matches(m)]
                status[name].update(matched=len(mine), truncated=limit is not None and len(mine) > limit,
                                    queues=per_queue(mine))
                found[name] = mine[:limit] if limit is not None else mine
            messages.extend(found[name])
        return {"messages": messages, "nodes": [status[name] for name in targets]}

    def _targets(self, node: str | None, cluster: bool) -> builtins.list[str]:
        me = self._me()
        if not cluster:
            return [node or me]
        targets = [n["name"] for n in self.app.nodes.list()] or [me]
        return targets if me in targets else [me, *targets]

    def _read_direct(self, targets: builtins.list[str], cluster: bool
                     ) -> tuple[dict[str, builtins.list[QueueMessage]], dict[str, dict], builtins.list[str]]:
        """The queues readable here (this node's, and others' on shared storage); the nodes
        left to ask through the relay. In a cluster listing an unreadable node is a status,
        not an error."""
        found: dict[str, builtins.list[QueueMessage]] = {}
        status: dict[str, dict] = {}
        relay: builtins.list[str] = []
        for name in targets:
            try:
                if name == self._me():
                    found[name], via = self._read_queue(self.local_config_dir(), name), "local"
                else:
                    shared = self._shared_queue(name)
                    if shared is None:
                        relay.append(name)
                        continue
                    found[name], via = self._read_shared(name, shared), "shared storage"
                status[name] = {"node": name, "reachable": True, "count": len(found[name]), "error": "",
                                "via": via}
            except NotFoundError as exc:
                if not cluster:
                    raise
                status[name] = {"node": name, "reachable": False, "count": None, "via": "",
                                "error": "not registered" if "not registered" in str(exc) else str(exc)}
            except ServiceError as exc:
                if not cluster:
                    raise
                status[name] = {"node": name, "reachable": False, "count": None, "error": str(exc), "via": ""}
        return found, status, relay

    def _read_relayed(self, relay: builtins.list[str], match: builtins.list[str] | None, limit: int | None,
                      timeout: float, cluster: bool, found: dict[str, builtins.list[QueueMessage]],
                      status: dict[str, dict]) -> None:
        """Ask the other nodes' cores for their (filtered, capped) lists, all at once."""
        relayed = {"match": list(match or []), "limit": min(limit or RELAY_LIST_LIMIT, RELAY_LIST_LIMIT)}
        answers = self.app.queue_relay.ask_many({name: ("list", relayed) for name in relay}, timeout)
        for name, answer in answers.items():
            if isinstance(answer, RuPostError):
                if not cluster:
                    raise answer
                status[name] = {"node": name, "reachable": False, "count": None, "error": str(answer),
                                "via": "relay"}
                continue
            found[name] = answer["messages"]
            own = answer["nodes"][0]
            status[name] = {"node": name, "reachable": True, "count": own["count"], "error": "", "via": "relay",
                            "matched": own.get("matched", len(found[name])),
                            "truncated": own.get("truncated", False),
                            "queues": own.get("queues") or per_queue(found[name])}

    def _read_shared(self, name: str, queue_dir: Path) -> builtins.list[QueueMessage]:
        work = self._scratch_conf(queue_dir)
        try:
            return self._read_queue(work, name)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _node_queue(self, name: str) -> builtins.list[QueueMessage]:
        """The queue of this node, or of another node through shared storage (no relay)."""
        if name == self._me():
            return self._read_queue(self.local_config_dir(), name)
        shared = self._shared_queue(name)
        if shared is None:
            recorded = self.app.nodes.show(name)["queue_directory"] or "(none recorded)"
            raise ServiceError(f"node {name}: its queue directory {recorded} "
                               "is not reachable from this node (not on shared storage here): "
                               f"run `rupost mailqueues list` on {name}")
        return self._read_shared(name, shared)

    def find(self, qid: str, node: str | None = None) -> QueueMessage:
        check_ids([qid])
        name = node or self._me()
        for msg in self._node_queue(name):
            if msg["id"] == qid:
                return msg
        raise NotFoundError(f"no message {qid} in the mail queue of node {name} "
                            "(delivered, deleted, or a wrong id: see `rupost mailqueues list`)")

    def show(self, qid: str, node: str | None = None, headers_only: bool = False,
             timeout: float = RELAY_TIMEOUT) -> dict:
        """The queue entry and its envelope and content as postcat prints them."""
        check_ids([qid])
        name = node or self._me()
        if name == self._me():
            conf, work = self.local_config_dir(), None
        else:
            shared = self._shared_queue(name)
            if shared is None:
                return self.app.queue_relay.ask(name, "show", {"ids": [qid], "headers_only": headers_only}, timeout)
            work = conf = self._scratch_conf(shared)
        try:
            msg = self.find(qid, name)
            parts = ["-e", "-h"] if headers_only else []  # none of -b/-e/-h: the whole file
            proc = self._run(["postcat", "-c", str(conf), "-q", *parts, qid])
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0:
            if "No such file" in proc.stderr or "not found" in proc.stderr:
                raise NotFoundError(f"message {qid} left the queue of node {name} while it was being read")
            raise ServiceError(f"postcat -q {qid}: {self._errors(proc)}")
        text = proc.stdout
        truncated = len(text) > MAX_SHOW
        return {**msg, "content": text[:MAX_SHOW], "truncated": truncated}

    # ------------------------------------------------------------ actions (by the node that owns the queue)
    def select(self, ids: builtins.list[str] | None,
               match: builtins.list[str] | None) -> tuple[builtins.list[QueueMessage], str]:
        """The messages an action applies to: explicit ids (each must be queued) or a filter."""
        if bool(ids) == bool(match):
            raise ValidationError("name the messages: one or more queue ids, or --all-matching FILTER "
                                  "(not both)")
        queued = self._node_queue(self._me())
        if ids:
            check_ids(ids)
            by_id = {m["id"]: m for m in queued}
            missing = [q for q in ids if q not in by_id]
            if missing:
                raise NotFoundError(f"not in the mail queue of node {self._me()}: "
                                    f"{', '.join(missing)} (delivered, deleted, or a wrong id)")
            return [by_id[q] for q in dict.fromkeys(ids)], ",".join(dict.fromkeys(ids))
        assert match  # (exactly one of ids and match is given)
        flt = QueueFilter.parse(match)
        return [m for m in queued if flt.matches(m)], flt.describe()

    def act(self, action: str, ids: builtins.list[str] | None = None, match: builtins.list[str] | None = None,
            node: str | None = None, timeout: float = RELAY_TIMEOUT) -> dict:
        if action not in ACTIONS:
            raise ValidationError(f"unknown queue action {action!r} (actions: {', '.join(ACTIONS)}, flush)")
        if node and node != self._me():
            return self.app.queue_relay.ask(node, action, {"ids": list(ids or []), "match": list(match or [])}, timeout)
        chosen, what = self.select(ids, match)
        skipped = []
        if action == "release":
            skipped = [m["id"] for m in chosen if m["queue"] != "hold"]
            if ids and skipped:
                raise ValidationError(f"not on hold: {', '.join(skipped)} (release applies to held messages)")
            chosen = [m for m in chosen if m["queue"] == "hold"]
        elif action == "hold":
            skipped = [m["id"] for m in chosen if m["queue"] == "hold"]
            chosen = [m for m in chosen if m["queue"] != "hold"]
        done: list[str] = []
        if chosen:
            conf = self.local_config_dir()
            proc = self._run(["postsuper", "-c", str(conf), ACTIONS[action], "-"],
                             stdin="".join(m["id"] + "\n" for m in chosen))
            for line in (proc.stderr or "").splitlines():
                m = _POSTSUPER_DONE.match(line.strip())
                if m:
                    done.append(m.group(1))
            if proc.returncode != 0:
                raise ServiceError(f"postsuper {ACTIONS[action]}: {self._errors(proc)}")
        gone = [m["id"] for m in chosen if m["id"] not in done]
        result = {"node": self._me(), "action": action, "selection": what,
                  "matched": len(chosen) + len(skipped), "done": done, "count": len(done),
                  "skipped": skipped, "not_found": gone}
        self.app.audit.record(f"mailqueue.{action}", what, node=result["node"], count=len(done), ids=done[:1000])
        return result

    def flush(self, ids: builtins.list[str] | None = None, node: str | None = None,
              timeout: float = RELAY_TIMEOUT) -> dict:
        """Attempt delivery of every deferred message now (postqueue -f), or of the named ones (-i)."""
        if node and node != self._me():
            return self.app.queue_relay.ask(node, "flush", {"ids": list(ids or [])}, timeout)
        conf = self.local_config_dir()
        if ids:
            check_ids(ids)
            for qid in ids:
                self.find(qid)
                proc = self._run(["postqueue", "-c", str(conf), "-i", qid])
                if proc.returncode != 0:
                    raise ServiceError(f"postqueue -i {qid}: {self._errors(proc)}")
        else:
            proc = self._run(["postqueue", "-c", str(conf), "-f"])
            if proc.returncode != 0:
                raise ServiceError(f"postqueue -f: {self._errors(proc)} (is postfix running? "
                                   "`rupost components status`)")
        self.app.audit.record("mailqueue.flush", ",".join(ids or []) or "all", node=self._me())
        return {"node": self._me(), "action": "flush", "ids": list(ids or []) or "all"}

    def summary(self) -> dict:
        """Counts per queue of this node (checks, metrics)."""
        counts = {q: 0 for q in ("active", "incoming", "deferred", "hold", "maildrop")}
        for m in self._node_queue(self._me()):
            counts[m["queue"]] = counts.get(m["queue"], 0) + 1
        counts["total"] = sum(v for k, v in counts.items())
        return counts
