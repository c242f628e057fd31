"""Deploying the active configuration onto this node, and recording each generation."""
from __future__ import annotations

import contextlib
import os
import zlib

from sqlalchemy import select, text

from ..db.models import Certificate, DHParam, Generation, utcnow
from rupost.deploy.pipeline import Deployer, DeployResult, Plan, TLSMaterial
from ..errors import DeployError, NotFoundError
from ..paths import GENERATION_TOKEN
from rupost.templating.document import TemplateDocument
from . import settings as settings_keys


LOCK_CLASS = 0x52505354  # "RPST": the advisory-lock namespace of RuPost deploys


class DeployService:
    def __init__(self, app):
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
    def deployer(self) -> Deployer:
        return Deployer(self.app.layout, self.app.config, self.app.adapters, self.app.backend)

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
            "node": {"name": cfg.node_name, "fqdn": cfg.fqdn, "address": cfg.address,
                     "listen_address": cfg.listen_address, "ports": dict(cfg.ports)},
            "cluster": {"nodes": app.nodes.members()},
            "settings": {"mail_host": app.settings.mail_host()},
            "directories": app.directories.template_context(),
            "push": app.push.template_context(),
            "impersonation": app.impersonation.template_context(),
            "database": {"host": cfg.database.host, "port": cfg.database.port, "data": cfg.database.data,
                         "user": cfg.database.user},
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

    def plan(self, parameters: dict | None = None, document: TemplateDocument | None = None) -> Plan:
        doc = document or self.app.templates.active()
        if parameters is None:
            parameters = self.app.settings.get(settings_keys.TEMPLATE_PARAMETERS, {}) or {}
        resolved = doc.resolve_parameters(parameters)
        return self.deployer.plan(doc, resolved, self.template_context(resolved), self.tls_material())

    @contextlib.contextmanager
    def lock(self, what: str = "deploy"):
        """One deploy (or rollback) at a time per node: a Postgres advisory lock held on
        a dedicated connection; the holder is named through its application_name."""
        key = zlib.crc32(self.app.config.node_name.encode()) - 2 ** 31
        engine = self.app.dbs.engine("main")
        holder = f"rupost {what} by {self.app.actor} (pid {os.getpid()})"[:63]
        with engine.connect() as conn:
            conn.execute(text("SELECT set_config('application_name', :n, false)"), {"n": holder})
            if not conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": LOCK_CLASS, "b": key}).scalar():
                row = conn.execute(text(
                    "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = :a AND l.objid = :b "
                    "AND l.objsubid = 2 AND l.granted"), {"a": LOCK_CLASS, "b": key % 2 ** 32}).first()
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
        return self.deployer.drift()

    def deploy(self, plan: Plan | None = None, force: bool = False) -> DeployResult:
        self.require_current_schema()
        # the node's own queue must not be under evacuation while its postfix may start
        with self.lock("deploy"), self.app.evacuation.ownership():
            return self._deploy(plan or self.plan(), force)

    def rollback(self, generation: int | None = None, force: bool = False) -> DeployResult:
        """Return this node to a kept generation (default: the newest applied one before the live one)."""
        with self.lock("rollback"), self.app.evacuation.ownership():
            deployer = self.deployer
            live = (deployer.live_manifest() or {}).get("number")
            if generation is None:
                applied = [g["generation"] for g in self.history(100) if g["result"] == "applied"]
                kept = set(deployer.generation_numbers())
                older = [n for n in applied if live is None or n < live]
                candidates = [n for n in older if n in kept]
                if not candidates:
                    raise NotFoundError("there is no earlier applied generation kept on this node")
                generation = candidates[0]
            try:
                result = deployer.rollback_to(generation, force)
            except DeployError as exc:
                self.app.audit.record("deploy.rollback.failed", self.app.config.node_name, generation=generation,
                                      error=str(exc))
                self._report_node(None)
                raise
            self._report_node(generation)
            self.app.audit.record("deploy.rollback", self.app.config.node_name, generation=generation,
                                  previous=live, reloaded=result.reloaded)
            return result

    def _deploy(self, plan: Plan, force: bool) -> DeployResult:
        try:
            result = self.deployer.apply(plan, force)
        except DeployError as exc:
            if exc.result is not None:
                self._record(plan, exc.result)
            self.app.audit.record("deploy.failed", self.app.config.node_name, error=str(exc))
            self._report_node(None)
            raise
        self._record(plan, result)
        self._report_node(result.generation if result.result == "applied" else None)
        self.app.audit.record("deploy", self.app.config.node_name, result=result.result,
                              generation=result.generation, reloaded=result.reloaded, started=result.started)
        return result

    def _report_node(self, applied_generation: int | None) -> None:
        """The node's state is what its components are, whatever the deploy intended."""
        components = self.app.components.states()
        state = "in_service" if all(c["running"] for c in components.values()) else "out_of_service"
        self.app.nodes.report(state, components, applied_generation)

    def _record(self, plan: Plan, result: DeployResult) -> None:
        if result.result == "unchanged":
            return
        with self.app.dbs.session("main") as s:
            node = self.app.nodes.current(s)
            existing = s.scalar(select(Generation).where(Generation.node_id == node.id,
                                                         Generation.number == result.generation))
            row = existing or Generation(node_id=node.id, number=result.generation)
            row.template_name, row.template_version = plan.template, plan.version
            row.parameters, row.file_hashes, row.steps = plan.parameters, plan.hashes, result.steps
            row.result, row.error, row.started_by = result.result, result.error, self.app.actor
            row.finished_at = utcnow()
            s.add(row)

    def history(self, limit: int = 20) -> list[dict]:
        with self.app.dbs.session("main") as s:
            node = self.app.nodes.current(s)
            rows = s.scalars(select(Generation).where(Generation.node_id == node.id)
                             .order_by(Generation.number.desc()).limit(limit))
            return [{"generation": g.number, "template": f"{g.template_name}@{g.template_version}",
                     "result": g.result, "error": g.error, "started_by": g.started_by,
                     "started_at": g.started_at.isoformat(),
                     "finished_at": g.finished_at.isoformat() if g.finished_at else None} for g in rows]
