"""Deploying the active configuration onto this node, and recording each generation."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import zlib
from dataclasses import asdict
from typing import TYPE_CHECKING, TypedDict

from sqlalchemy import Connection, select, text

from ..db.models import Certificate, DHParam, Generation, utcnow
from ..deploy.pipeline import DeployOutcome, DeployPipeline, DeployResult
from ..deploy.plan import Plan, TLSMaterial
from ..deploy.store import GenerationStore
from ..errors import ConflictError, DeployError, NotFoundError, RuPostError, TemplateError
from ..paths import GENERATION_TOKEN
from ..templating.document import TemplateDocument
from ..templating.limits import declares_load, derive_limits
from . import settings as settings_keys

if TYPE_CHECKING:
    from collections.abc import Iterator

    from . import Services

log = logging.getLogger("rupost.deploy")


class GenerationRecord(TypedDict):
    """One generation of this node as the faces show it."""
    generation: int
    template: str  # NAME@VERSION
    result: str  # a DeployResult value
    error: str
    started_by: str
    started_at: str  # ISO 8601
    finished_at: str | None


LOCK_CLASS = 0x52505354  # "RPST": the advisory-lock namespace of RuPost deploys


class DeployService:
    def __init__(self, app: Services) -> None:
        self.app = app
        self._schema_current = False

    def require_current_schema(self) -> None:
        """The template's lookups call functions and views the data migrations create: a node
        whose package is newer than its databases would deploy lookups that fail on every
        message (postfix then defers all mail). Checked once per process: a schema does not
        go back."""
        if self._schema_current:
            return
        from ..db import migrate

        behind = [row for row in migrate.status(self.app.dbs) if not row["up_to_date"]]
        if behind:
            names = ", ".join(f"{row['database']} (at {row['current'] or 'nothing'})" for row in behind)
            raise DeployError(f"the databases are older than this version of RuPost: {names}; "
                              "run 'rupost db upgrade' first. Nothing was changed on this node")
        self._schema_current = True

    @property
    def store(self) -> GenerationStore:
        return GenerationStore(self.app.layout)

    @property
    def pipeline(self) -> DeployPipeline:
        return DeployPipeline(self.store, self.app.component_runtime, self.app.config.generations_kept)

    def tls_material(self) -> TLSMaterial:
        with self.app.dbs.session("main") as s:
            cert = s.scalar(select(Certificate).where(Certificate.cert_type == "mail", Certificate.active))
            dh = s.scalar(select(DHParam).where(DHParam.active))
            if cert is None or dh is None:
                raise NotFoundError("no active mail certificate or DH parameters: run rupost-wizard first")
            return TLSMaterial(cert.cert_pem, cert.key_pem, dh.pem)

    def template_context(self, parameters: dict) -> dict:
        """The documented names a template may use (docs/templates.md)."""
        app, cfg, layout = self.app, self.app.config, self.app.layout
        gen = GENERATION_TOKEN
        components = list(app.adapters)
        return {
            "parameters": parameters,
            "limits": derive_limits(parameters).as_dict(),
            "node": {"name": cfg.node_name, "fqdn": cfg.fqdn, "address": cfg.address,
                     "listen_address": cfg.listen_address, "ports": dict(cfg.ports)},
            "cluster": {"nodes": app.nodes.members()},
            "settings": {"mail_host": app.settings.mail_host()},
            "directories": app.directories.template_context(),
            "push": app.push.template_context(),
            "impersonation": app.impersonation.template_context(),
            "database": {"host": cfg.database.host, "port": cfg.database.port, "data": cfg.database.data,
                         "user": cfg.database.user, "members": [asdict(m) for m in cfg.database.members]},
            "paths": {
                "config": {c: f"{gen}/{c}" for c in components},
                "tls": {"cert": f"{gen}/tls/mail.crt", "key": f"{gen}/tls/mail.key",
                        "dhparam": f"{gen}/tls/dhparam.pem"},
                "run": {c: str(layout.run_dir(c)) for c in components},
                "logs": str(layout.logs),
                "state": str(layout.state),
                "mail_storage": str(layout.mail_storage),
                "postfix_queue": str(layout.postfix_queue),
                "postfix_data": str(layout.postfix_data),
                "sogo_home": str(layout.sogo_home),
            },
        }

    def plan(self, parameters: dict | None = None, document: TemplateDocument | None = None,
             check: bool = False) -> Plan:
        """The active template (or `document`) rendered and compared with the live files; with
        `check`, every component's own checker has also accepted the files (ComponentCheckError
        otherwise), as a deploy would check them before the switch."""
        doc = document or self.app.templates.active()
        if parameters is None:
            parameters = self.app.settings.get(settings_keys.TEMPLATE_PARAMETERS, {}) or {}
        resolved = doc.resolve_parameters(parameters)
        self._check_open_files(doc, resolved)
        plan = self.pipeline.plan(doc, resolved, self.template_context(resolved), self.tls_material())
        if check:
            self.pipeline.check(plan)
        return plan

    def _check_open_files(self, doc: TemplateDocument, parameters: dict) -> None:
        """The limits derived from the load need file descriptors this node's service backend
        must grant: a daemon that cannot raise its limit refuses to start (HAProxy) or drops
        connections at full load (nginx, dovecot)."""
        if not declares_load(doc.parameter_specs):
            return
        needed = derive_limits(parameters).open_files
        granted = self.app.backend.open_files_limit()
        if needed > granted:
            raise TemplateError(
                f"limits.open_files = {needed} (from parameters max_imap_sessions, max_smtp_sessions, "
                f"max_web_sessions) is above the open-file limit of the {self.app.backend.name} service backend "
                f"= {granted}: lower the parameters or raise the limit (ulimit -Hn; LimitNOFILE in "
                "rupost-component@.service)")

    def _lock_key(self) -> int:
        return zlib.crc32(self.app.config.node_name.encode()) - 2 ** 31

    def _lock_holder(self, conn: Connection) -> tuple[str, dt.datetime] | None:
        """Who holds this node's deploy lock (application_name, since), read from pg_locks."""
        row = conn.execute(text(
            "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = :a AND l.objid = :b "
            "AND l.objsubid = 2 AND l.granted"), {"a": LOCK_CLASS, "b": self._lock_key() % 2 ** 32}).first()
        return (row[0], row[1]) if row else None

    def in_progress(self) -> str | None:
        """The holder of this node's deploy lock, or None. Only reads pg_locks: the node agent
        asks it on every tick, and taking the lock itself, even for an instant, could make a
        deploy starting at that instant fail with "another deploy is running"."""
        # through a session: a database away or switching over is a DatabaseError the agent
        # reports, not an exception that ends it
        with self.app.dbs.session("main") as s:
            holder = self._lock_holder(s.connection())
        return holder[0] if holder else None

    @contextlib.contextmanager
    def lock(self, what: str = "deploy") -> Iterator[None]:
        """One deploy (or rollback) at a time per node: a Postgres advisory lock held on
        a dedicated connection; the holder is named through its application_name."""
        key = self._lock_key()
        engine = self.app.dbs.engine("main")
        holder = f"rupost {what} by {self.app.actor} (pid {os.getpid()})"[:63]
        with engine.connect() as conn:
            conn.execute(text("SELECT set_config('application_name', :n, false)"), {"n": holder})
            if not conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": LOCK_CLASS, "b": key}).scalar():
                row = self._lock_holder(conn)
                who = f"{row[0]}, since {row[1]:%Y-%m-%d %H:%M:%S %Z}" if row else "another process"
                conn.rollback()
                raise DeployError(f"another deploy is running on node {self.app.config.node_name}: {who}")
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": LOCK_CLASS, "b": key})
                conn.commit()

    def drift(self) -> list[dict]:
        return [d.as_dict() for d in self.store.drift()]

    def deploy(self, plan: Plan | None = None, force: bool = False, expected: str | None = None) -> DeployOutcome:
        """Apply `plan` (default: a fresh one). `expected` is the digest of the plan an
        administrator was shown: the deploy is refused if the plan is no longer that one.
        A deploy that did not apply raises DeployError carrying its outcome."""
        self.require_current_schema()
        # the node's own queue must not be under evacuation while its postfix may start
        with self.lock("deploy"), self.app.evacuation.ownership():
            plan = plan or self.plan()
            if expected is not None and plan.digest != expected:
                raise ConflictError("the configuration changed since that plan was shown (another deploy, "
                                    "a parameter or the template): look at the plan again. Nothing was changed")
            return self._deploy(plan, force)

    def rollback(self, generation: int | None = None, force: bool = False) -> DeployOutcome:
        """Return this node to a kept generation (default: the newest applied one before the live one)."""
        with self.lock("rollback"), self.app.evacuation.ownership():
            store = self.store
            live = store.live_number()
            if generation is None:
                generation = self._previous_applied(live, set(store.numbers()))
            try:
                outcome = self.pipeline.rollback_to(generation, force)
                self._raise_unless_ok(outcome)
                self._forget_what_sogo_cached(outcome)
            except DeployError as exc:
                self.app.audit.record("deploy.rollback.failed", self.app.config.node_name, generation=generation,
                                      error=str(exc))
                self._report_node(None)
                raise
            self._report_node(generation)
            self.app.audit.record("deploy.rollback", self.app.config.node_name, generation=generation,
                                  previous=live, reloaded=outcome.reloaded)
            return outcome

    def _previous_applied(self, live: int | None, kept: set[int]) -> int:
        applied = [g["generation"] for g in self.history(100) if g["result"] == DeployResult.APPLIED]
        candidates = [n for n in applied if (live is None or n < live) and n in kept]
        if not candidates:
            raise NotFoundError("there is no earlier applied generation kept on this node")
        return candidates[0]

    @staticmethod
    def _raise_unless_ok(outcome: DeployOutcome) -> None:
        if not outcome.ok:
            error = DeployError(outcome.message or outcome.error)
            error.outcome = outcome
            raise error

    def _deploy(self, plan: Plan, force: bool) -> DeployOutcome:
        try:
            outcome = self.pipeline.apply(plan, force)
            self._record(plan, outcome)
            self._retry_what_restarts_deferred(outcome)
            self._raise_unless_ok(outcome)
            self._forget_what_sogo_cached(outcome)
        except DeployError as exc:
            self.app.audit.record("deploy.failed", self.app.config.node_name, error=str(exc))
            self._report_node(None)
            raise
        except BaseException as exc:  # interrupted after the switch: the node was returned, record it
            interrupted = getattr(exc, "outcome", None)
            if interrupted is not None:
                self._record(plan, interrupted)
            raise
        self._report_node(outcome.generation if outcome.result == DeployResult.APPLIED else None)
        self.app.audit.record("deploy", self.app.config.node_name, result=str(outcome.result),
                              generation=outcome.generation, reloaded=outcome.reloaded, started=outcome.started)
        return outcome

    def _retry_what_restarts_deferred(self, outcome: DeployOutcome) -> None:
        """A mail component restarted by the deploy (or by its rollback) was away for a
        moment: a message postfix tried to hand to dovecot's LMTP then was deferred, and
        postfix would try it again only after its backoff (minutes). The node serves again, so
        the deferred mail is tried now (best effort: the agent's next return does it too)."""
        if not set(outcome.started) & set(self.app.adapters.mail_unit):
            return
        try:
            self.app.mailqueues.flush()
        except RuPostError as exc:
            log.warning("the mail deferred during the deploy's restarts waits for postfix's next retry: %s", exc)

    def _forget_what_sogo_cached(self, outcome: DeployOutcome) -> None:
        """SOGo keeps each user's attributes in memcached across its restarts, among them the
        domain its sources gave the user, which scopes the address books: a SOGo restarted
        with other sources must not read what the previous ones answered (a user would find
        an empty address book until the entry expires). Emptying its memcached logs nobody out."""
        from .cache import flush_sogo_cache

        if "sogo" in outcome.reloaded or "sogo" in outcome.started:
            flush_sogo_cache(self.app)

    def _report_node(self, applied_generation: int | None) -> None:
        """The node's state is what its components are, whatever the deploy intended."""
        components = self.app.components.states()
        state = "in_service" if all(c["running"] for c in components.values()) else "out_of_service"
        self.app.nodes.report(state, components, applied_generation)

    def _record(self, plan: Plan, result: DeployOutcome) -> None:
        if result.result == DeployResult.UNCHANGED:
            return
        with self.app.dbs.session("main") as s:
            node = self.app.nodes.current(s)
            existing = s.scalar(select(Generation).where(Generation.node_id == node.id,
                                                         Generation.number == result.generation))
            row = existing or Generation(node_id=node.id, number=result.generation)
            row.template_name, row.template_version = plan.template, plan.version
            row.parameters, row.file_hashes = plan.parameters, plan.hashes
            row.steps = [step.as_dict() for step in result.steps]
            row.result, row.error, row.started_by = str(result.result), result.error, self.app.actor
            row.finished_at = utcnow()
            s.add(row)

    def history(self, limit: int = 20) -> list[GenerationRecord]:
        """This node's generations, newest first, as recorded by each deploy and rollback."""
        with self.app.dbs.session("main") as s:
            node = self.app.nodes.current(s)
            rows = s.scalars(select(Generation).where(Generation.node_id == node.id)
                             .order_by(Generation.number.desc()).limit(limit))
            return [GenerationRecord(generation=g.number, template=f"{g.template_name}@{g.template_version}",
                                     result=g.result, error=g.error, started_by=g.started_by,
                                     started_at=g.started_at.isoformat(),
                                     finished_at=g.finished_at.isoformat() if g.finished_at else None)
                    for g in rows]
