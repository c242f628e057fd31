"""Cluster-wide deploys: the active configuration applied node by node.

The node that starts the rollout deploys itself first; then each other live node, in
name order, is asked through Postgres (a `rollout_steps` row set to *requested* and a
NOTIFY on `rupost_rollout`; its agent also polls) and the rollout waits for its
result. The first failure stops the rollout: that node has rolled itself back (the
deploy pipeline does that), and the nodes after it are skipped, so a version that
fails on the first node never reaches the others. Nodes whose core is not alive are
skipped and reported.

Reconciliation: a node that missed a rollout (its agent was not running, or it joined
the cluster later) applies the last completed rollout by itself when its agent runs
again, unless it has deployed something newer since (an administrator's
`deploy --this-node`), which is left alone.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text

from rupost.services import settings as settings_keys

from ..db.models import Generation, Node, Rollout, RolloutStep, utcnow
from ..errors import DeployError, RuPostError

if TYPE_CHECKING:
    from ..services import Services

CHANNEL = "rupost_rollout"


class RolloutService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def run(self, force: bool = False, step_timeout: float = 300.0) -> dict:
        app = self.app
        doc = app.templates.active()
        params = app.settings.get(settings_keys.TEMPLATE_PARAMETERS, {}) or {}
        me = app.config.node_name
        nodes = sorted(app.nodes.list(), key=lambda n: (n["name"] != me, n["name"]))
        with app.dbs.session("main") as s:
            rollout = Rollout(template_name=doc.name, template_version=doc.version, parameters=params,
                              status="running", requested_by=app.actor, error="")
            s.add(rollout)
            s.flush()
            rollout_id = rollout.id
            for position, node in enumerate(nodes):
                alive = node["name"] == me or app.nodes.agent_alive(node)
                s.add(RolloutStep(rollout_id=rollout_id, node_name=node["name"], position=position,
                                  status="pending" if alive else "skipped",
                                  error="" if alive else "its node agent is not running: it catches up "
                                                         "when its agent runs again"))
        app.audit.record("rollout.start", f"{doc.name}@{doc.version}", rollout=rollout_id)
        for node in nodes:
            step = self.step(rollout_id, node["name"])
            if step["status"] == "skipped":
                continue
            if node["name"] == me:
                self._apply_here(rollout_id, force)
            else:
                self._request(rollout_id, node["name"])
                self._wait(rollout_id, node["name"], step_timeout)
            step = self.step(rollout_id, node["name"])
            if step["status"] != "applied":
                self._finish(rollout_id, "failed", f"{node['name']}: {step['error']}")
                raise DeployError(f"rollout {rollout_id} stopped at node {node['name']}: {step['error']}\n"
                                  "the nodes after it were not changed")
        self._finish(rollout_id, "done", "")
        return self.show(rollout_id)

    # ------------------------------------------------------------ steps
    def step(self, rollout_id: int, node: str) -> dict:
        with self.app.dbs.session("main") as s:
            row: RolloutStep = s.scalar(select(RolloutStep).where(  # type: ignore[assignment]
                RolloutStep.rollout_id == rollout_id, RolloutStep.node_name == node))
            return {"node": row.node_name, "status": row.status, "error": row.error, "generation": row.generation}

    def _set(self, rollout_id: int, node: str, **values: Any) -> None:
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(RolloutStep).where(RolloutStep.rollout_id == rollout_id,
                                                     RolloutStep.node_name == node))
            for key, value in values.items():
                setattr(row, key, value)

    def _request(self, rollout_id: int, node: str) -> None:
        self._set(rollout_id, node, status="requested")
        with self.app.dbs.engine("main").connect() as conn:
            conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": node})
            conn.commit()

    def _wait(self, rollout_id: int, node: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.step(rollout_id, node)["status"] in ("applied", "failed"):
                return
            time.sleep(0.5)
        self._set(rollout_id, node, status="failed", error=f"no answer from its agent within {int(timeout)} s")

    def _apply_here(self, rollout_id: int, force: bool = False) -> None:
        """Deploy this node with the rollout's template version and parameters."""
        me = self.app.config.node_name
        self._set(rollout_id, me, status="running")
        with self.app.dbs.session("main") as s:
            rollout: Rollout = s.get(Rollout, rollout_id)  # type: ignore[assignment]
            name, version, params = rollout.template_name, rollout.template_version, rollout.parameters
        try:
            doc = self.app.templates.get(name, version)
            result = self.app.deploys.deploy(self.app.deploys.plan(params, document=doc), force)
        except RuPostError as exc:
            self._set(rollout_id, me, status="failed", error=str(exc))
            return
        self._set(rollout_id, me, status="applied", generation=result.generation)

    def _finish(self, rollout_id: int, status: str, error: str) -> None:
        with self.app.dbs.session("main") as s:
            rollout: Rollout = s.get(Rollout, rollout_id)  # type: ignore[assignment]
            rollout.status, rollout.error, rollout.finished_at = status, error, utcnow()
            for step in s.scalars(select(RolloutStep).where(RolloutStep.rollout_id == rollout_id,
                                                            RolloutStep.status == "pending")):
                step.status, step.error = "skipped", "an earlier node failed"
        self.app.audit.record("rollout." + status, str(rollout_id), error=error)

    # ------------------------------------------------------------ the agent's side
    def pending_for_me(self) -> list[int]:
        with self.app.dbs.session("main") as s:
            return list(s.scalars(select(RolloutStep.rollout_id).where(
                RolloutStep.node_name == self.app.config.node_name, RolloutStep.status == "requested")))

    def serve_requests(self) -> int:
        served = 0
        for rollout_id in self.pending_for_me():
            self._apply_here(rollout_id)
            served += 1
        return served

    def reconcile(self) -> int | None:
        """Catch up with the last completed rollout if this node missed it; returns the
        rollout applied, or None when there was nothing to do."""
        from sqlalchemy import func

        me = self.app.config.node_name
        with self.app.dbs.session("main") as s:
            rollout = s.scalar(select(Rollout).where(Rollout.status == "done").order_by(Rollout.id.desc()).limit(1))
            if rollout is None:
                return None
            step = s.scalar(select(RolloutStep).where(RolloutStep.rollout_id == rollout.id,
                                                      RolloutStep.node_name == me))
            if step is not None and step.status in ("applied", "failed", "running"):
                return None  # applied; or a catch-up failed (rolled back): wait for the next rollout
            newer = s.scalar(select(func.count()).select_from(Generation).join(Node)
                             .where(Node.name == me, Generation.result == "applied",
                                    Generation.finished_at > rollout.finished_at))
            if newer:
                return None
            if step is None:  # the node joined after the rollout
                position = s.scalar(select(func.coalesce(func.max(RolloutStep.position), -1))  # type: ignore[operator]
                                    .where(RolloutStep.rollout_id == rollout.id)) + 1
                s.add(RolloutStep(rollout_id=rollout.id, node_name=me, position=position, status="pending"))
            rollout_id = rollout.id
        self._apply_here(rollout_id)
        step = self.step(rollout_id, me)  # type: ignore[assignment]  # the step as a dict now
        self.app.audit.record("rollout.catch_up", str(rollout_id), node=me,
                              status=step["status"], error=step["error"])  # type: ignore[index]
        return rollout_id

    def show(self, rollout_id: int) -> dict:
        with self.app.dbs.session("main") as s:
            rollout: Rollout = s.get(Rollout, rollout_id)  # type: ignore[assignment]
            steps = s.scalars(select(RolloutStep).where(RolloutStep.rollout_id == rollout_id)
                              .order_by(RolloutStep.position)).all()
            return {"id": rollout.id, "template": f"{rollout.template_name}@{rollout.template_version}",
                    "status": rollout.status, "error": rollout.error,
                    "steps": [{"node": st.node_name, "status": st.status, "generation": st.generation,
                               "error": st.error} for st in steps]}
