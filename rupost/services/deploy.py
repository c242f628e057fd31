"""Deploying the active configuration onto this node, and recording each generation."""
from __future__ import annotations

from sqlalchemy import select

from ..db.models import Certificate, DHParam, Generation, utcnow
from ..deploy import Deployer, DeployResult, Plan, TLSMaterial
from ..errors import DeployError, NotFoundError
from ..paths import GENERATION_TOKEN
from ..templates.document import TemplateDocument
from . import settings as settings_keys


class DeployService:
    def __init__(self, app):
        self.app = app

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
            "cluster": {"nodes": app.nodes.list()},
            "settings": {"mail_host": app.settings.mail_host()},
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

    def deploy(self, plan: Plan | None = None) -> DeployResult:
        plan = plan or self.plan()
        try:
            result = self.deployer.apply(plan)
        except DeployError as exc:
            if exc.result is not None:
                self._record(plan, exc.result)
            self.app.audit.record("deploy.failed", self.app.config.node_name, error=str(exc))
            self._report_node("out_of_service" if exc.result is None or exc.result.result == "failed"
                              else "in_service", exc.result)
            raise
        self._record(plan, result)
        self._report_node("in_service", result)
        self.app.audit.record("deploy", self.app.config.node_name, result=result.result,
                              generation=result.generation, reloaded=result.reloaded, started=result.started)
        return result

    def _report_node(self, state: str, result: DeployResult | None) -> None:
        components = self.app.components.states()
        self.app.nodes.report(state, components,
                              result.generation if result is not None and result.result == "applied" else None)

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
