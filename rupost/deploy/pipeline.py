"""The deploy pipeline: render -> validate -> switch -> reload -> probe, else roll back.

A deploy (or a rollback by hand to a kept generation) is a sequence of stages. Nothing
on the node changes before the switch; from the switch on, one cleanup mechanism — an
ExitStack armed right after the switch, with SIGTERM and SIGINT turned into exceptions
for the duration — returns the node to the previous generation on *any* failure: a
daemon that does not start, a probe that fails, an interruption, a bug. The pipeline
returns a ``DeployOutcome``; a completed rollback is an outcome (``rolled_back``), not
an exception. Interruptions still propagate after the rollback.
"""
from __future__ import annotations

import contextlib
import enum
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from adapters import ComponentRegistry

from ..errors import ComponentCheckError, DeployError
from ..paths import GENERATION_TOKEN
from ..templating.document import TemplateDocument
from .plan import TLS, Plan, TLSMaterial, build_models, render_context, render_files, sha256
from .runtime import ComponentRuntime, StepLog
from .store import GenerationStore


class DeployResult(enum.StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


@dataclass
class DeployOutcome(StepLog):
    generation: int | None = None
    result: DeployResult = DeployResult.FAILED
    error: str = ""  # the failure, as recorded with the generation
    message: str = ""  # the failure and what was done about it, for the administrator

    @property
    def ok(self) -> bool:
        return self.result in (DeployResult.APPLIED, DeployResult.UNCHANGED)

    def as_dict(self) -> dict:
        return {"generation": self.generation, "result": str(self.result),
                "steps": [s.as_dict() for s in self.steps], "reloaded": self.reloaded, "started": self.started}


class DeployInterrupted(BaseException):
    """SIGTERM during a deploy: raised in the deploying thread so the cleanup runs."""


@contextlib.contextmanager
def interruptions_raise() -> Iterator[None]:
    """SIGTERM and SIGINT raise once (DeployInterrupted, KeyboardInterrupt) in the main
    thread; a second signal while the cleanup runs is ignored, so the rollback finishes.
    Elsewhere (the panel's job thread) signals are left to the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        raise KeyboardInterrupt() if signum == signal.SIGINT else DeployInterrupted(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class DeployPipeline:
    def __init__(self, store: GenerationStore, runtime: ComponentRuntime, generations_kept: int) -> None:
        self.store = store
        self.runtime = runtime
        self.components: ComponentRegistry = runtime.components
        self.generations_kept = generations_kept

    # ------------------------------------------------------------ plan and check
    def plan(self, doc: TemplateDocument, parameters: dict, context: dict, tls: TLSMaterial) -> Plan:
        models = build_models(self.components, doc, context)
        # with the node's data: the daemons' database logins are part of their files
        token_ctx = render_context(self.store.layout, self.runtime.node, Path(GENERATION_TOKEN), self.runtime.data)
        files = render_files(self.components, models, token_ctx, tls)
        hashes = {comp: {f.path: sha256(f.content) for f in fs} for comp, fs in files.items()}
        changed = self.store.changed_components(hashes)
        plan = Plan(doc.name, doc.version, parameters, files, hashes, changed, self.store.live_number())
        plan.diffs = {comp: self.store.diff(comp, files[comp]) for comp in changed}
        return plan

    def check(self, plan: Plan, log: StepLog | None = None) -> None:
        """Run every component's own checker on the plan's files; ComponentCheckError names
        the first that refuses them."""
        log = log if log is not None else StepLog()
        plan.checked = []
        with self.store.scratch(plan) as check_dir:
            ctx = render_context(self.store.layout, self.runtime.node, check_dir, self.runtime.data)
            for name, adapter in self.components.items():
                try:
                    adapter.validate(check_dir / name, ctx)
                except ComponentCheckError as exc:
                    log.step(f"validate {name}", False, exc.detail)
                    raise
                log.step(f"validate {name}", True)
                plan.checked.append(name)

    # ------------------------------------------------------------ apply
    def apply(self, plan: Plan, force: bool = False) -> DeployOutcome:
        self.store.layout.ensure_base()
        self.store.refuse_drift(plan, force)
        if not plan.has_changes:
            return self._start_stopped(plan)
        previous = self.store.live_dir()
        number, gen_dir = self.store.write(plan)
        outcome = DeployOutcome(generation=number)
        try:
            self._finalize(gen_dir)
        except ComponentCheckError as exc:
            self.store.discard(gen_dir)
            outcome.step("render", False, exc.detail)
            return self._refused(outcome, exc)
        outcome.step("render", True, f"generation {number}: {', '.join(plan.changed)} changed")
        return self._make_live(plan, gen_dir, previous, outcome, discard_invalid=True)

    def rollback_to(self, number: int, force: bool = False) -> DeployOutcome:
        """Make a kept generation live again, by hand: the same validate, switch, reload
        and probe as a deploy, and the same return on failure."""
        plan = self.store.plan_of(number)
        gen_dir = self.store.path(number)
        live = self.store.live_dir()
        if live is not None and live.name == gen_dir.name:
            raise DeployError(f"generation {number} is already live")
        self.store.refuse_drift(plan, force)
        outcome = DeployOutcome(generation=number)
        outcome.step("rollback by hand", True, f"to generation {number}: {', '.join(plan.changed) or 'no'} changes")
        return self._make_live(plan, gen_dir, live, outcome, discard_invalid=False)

    def _start_stopped(self, plan: Plan) -> DeployOutcome:
        outcome = DeployOutcome(generation=plan.current_generation, result=DeployResult.UNCHANGED)
        outcome.step("plan", True, "no configuration changes")
        stopped = self.runtime.stopped()
        if stopped:
            self.runtime.start_or_reload(stopped, [], outcome)
            self.runtime.require_probes(outcome)
        return outcome

    def _finalize(self, gen_dir: Path) -> None:
        # at the final path: compiled artefacts (Sieve binaries) record the location of their
        # source and are "out of date" anywhere else
        for name, adapter in self.components.items():
            if (gen_dir / name).is_dir():
                adapter.finalize(gen_dir / name)

    @staticmethod
    def _refused(outcome: DeployOutcome, exc: ComponentCheckError) -> DeployOutcome:
        outcome.result, outcome.error = DeployResult.FAILED, str(exc)
        outcome.message = f"{exc}\nnothing was changed on this node"
        return outcome

    def _make_live(self, plan: Plan, gen_dir: Path, previous: Path | None, outcome: DeployOutcome,
                   discard_invalid: bool) -> DeployOutcome:
        try:
            self.check(plan, outcome)
        except ComponentCheckError as exc:
            if discard_invalid:
                self.store.discard(gen_dir)
            return self._refused(outcome, exc)
        to_reload = self.affected(plan.changed)
        with interruptions_raise(), contextlib.ExitStack() as cleanup:
            self.store.switch(gen_dir)
            outcome.step("switch", True, f"current -> {gen_dir.name}")
            cleanup.push(self._return_on_failure(previous, to_reload, outcome))
            self.runtime.start_or_reload(self.components, to_reload, outcome)
            self.runtime.require_probes(outcome)
            cleanup.pop_all()
            outcome.result = DeployResult.APPLIED
        if outcome.result is DeployResult.APPLIED:
            self.store.prune(self.generations_kept)
        return outcome

    def affected(self, changed: list[str]) -> list[str]:
        """The components to reload for these changes: TLS changes reach every TLS reader."""
        affected = {c for c in changed if c in self.components}
        if TLS in changed:
            affected.update(self.components.tls_readers)
        return [c for c in self.components if c in affected]

    # ------------------------------------------------------------ rollback
    def _return_on_failure(self, previous: Path | None, to_reload: list[str],
                           outcome: DeployOutcome) -> Callable[..., bool]:
        def on_exit(exc_type: type[BaseException] | None, exc: BaseException | None,
                    tb: TracebackType | None) -> bool:
            if exc is None:
                return False
            failure = str(exc) if isinstance(exc, DeployError) else f"deploy interrupted: {type(exc).__name__} {exc}"
            outcome.error = failure
            self._return_to(previous, to_reload, outcome, failure)
            if not isinstance(exc, DeployError):
                exc.add_note(outcome.message)
                exc.outcome = outcome  # type: ignore[attr-defined]  # recorded by the service on the way out
            return isinstance(exc, DeployError)  # an interruption or a bug propagates after the return
        return on_exit

    def _return_to(self, previous: Path | None, to_reload: list[str], outcome: DeployOutcome, failure: str) -> None:
        outcome.result = DeployResult.FAILED
        if previous is None:
            self.runtime.stop_mail_unit()
            self.store.unlink_current()  # a failed first generation is not "live"
            outcome.step("rollback", False, "no previous generation: all mail components stopped")
            outcome.message = (f"{failure}\nthere is no previous generation to return to; "
                               "all mail components were stopped")
            return
        self.store.switch(previous)
        try:
            try:
                self.runtime.start_or_reload(self.components, to_reload, outcome)
                self.runtime.require_probes(outcome)
            except DeployError:
                # A daemon can keep state from the failed generation through a reload (postfix's
                # master throttles a service whose processes died at start-up for a minute):
                # a restart with the previous files starts from a clean slate.
                self.runtime.restart(to_reload, outcome)
                self.runtime.require_probes(outcome)
        except DeployError as second:
            self.runtime.stop_mail_unit()
            outcome.step("rollback", False, str(second))
            outcome.message = (f"{failure}\nrollback to generation {previous.name} also failed: {second}; "
                               "the mail components were stopped, the node is out of service")
            return
        outcome.result = DeployResult.ROLLED_BACK
        outcome.step("rollback", True, f"returned to generation {previous.name}")
        outcome.message = (f"{failure}\nrolled back to generation {int(previous.name)}: "
                           "the previous configuration is running and answers its probes")
