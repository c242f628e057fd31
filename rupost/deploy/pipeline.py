"""The deploy pipeline: render -> validate -> switch -> reload -> probe, else roll back.

Every deploy renders into a new *generation* directory; the live configuration is
the ``current`` symlink, swapped atomically, and the previous generation stays
intact for the rollback. Installed files refer to each other through ``current``
(never through a generation's own path), so a component whose files did not
change has byte-identical files in the new generation and needs no reload; a
long-running helper such as postfix's proxymap keeps matching the paths it was
started with. Before the switch, the same files are materialised once more in a
scratch directory where they refer to that directory instead, and each
component's own checker runs there: the checked configuration is the installed
one with only the directory prefix changed. Hashes are taken with the prefix
replaced by a token, so an unchanged configuration hashes the same whichever
generation it lands in and a no-change redeploy touches nothing.
"""
from __future__ import annotations

import difflib
import grp
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from adapters.base import Adapter, RenderContext, RenderedFile
from . import probes
from rupost.config import NodeConfig
from rupost.errors import ComponentCheckError, DeployError, TemplateError
from rupost.paths import GENERATION_TOKEN, Layout
from rupost.templating import render_components
from rupost.templating import errors as schema_errors
from rupost.templating.document import TemplateDocument

TLS = "tls"
# components that read the TLS files and must reload when they change
TLS_READERS = ("dovecot", "postfix", "nginx")
MANIFEST = "manifest.json"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TLSMaterial:
    cert_pem: str
    key_pem: str
    dhparam_pem: str

    def files(self) -> list[RenderedFile]:
        return [RenderedFile("mail.crt", self.cert_pem), RenderedFile("mail.key", self.key_pem, mode=0o600),
                RenderedFile("dhparam.pem", self.dhparam_pem)]


@dataclass
class Plan:
    template: str
    version: str
    parameters: dict
    files: dict[str, list[RenderedFile]]  # component -> files (token form)
    hashes: dict[str, dict[str, str]]
    changed: list[str]  # components whose files differ from the live generation
    current_generation: int | None
    diffs: dict[str, str] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.changed)


@dataclass
class DeployResult:
    generation: int | None
    result: str  # applied | unchanged | rolled_back | failed
    steps: list[dict] = field(default_factory=list)
    error: str = ""
    reloaded: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    def step(self, name: str, ok: bool, detail: str = "") -> None:
        self.steps.append({"step": name, "ok": ok, "detail": detail, "at": time.time()})


class Deployer:
    def __init__(self, layout: Layout, node: NodeConfig, adapters: dict[str, Adapter], backend):
        self.layout = layout
        self.node = node
        self.adapters = adapters
        self.backend = backend

    # ------------------------------------------------------------ contexts
    def render_context(self, generation_dir: Path) -> RenderContext:
        return RenderContext(self.layout, self.node, self.node.database, generation_dir)

    def live_context(self) -> RenderContext:
        return self.render_context(self.layout.current)

    # ------------------------------------------------------------ plan
    def build_models(self, doc: TemplateDocument, context: dict) -> dict:
        models = render_components(doc.data["components"], context)
        problems: list[str] = []
        for name, adapter in self.adapters.items():
            section_problems = schema_errors.validate(models[name], adapter.schema, f"components.{name}")
            if not section_problems:
                section_problems = adapter.check_model(models[name])
            problems += section_problems
        schema_errors.raise_if(problems, f"template {doc.name} {doc.version}")
        return models

    def plan(self, doc: TemplateDocument, parameters: dict, context: dict, tls: TLSMaterial) -> Plan:
        models = self.build_models(doc, context)
        token_ctx = self.render_context(Path(GENERATION_TOKEN))
        files: dict[str, list[RenderedFile]] = {TLS: tls.files()}
        for name, adapter in self.adapters.items():
            try:
                files[name] = adapter.render(models[name], token_ctx)
            except ValueError as exc:
                raise TemplateError(f"components.{name}: {exc}") from None
        hashes = {comp: {f.path: sha256(f.content) for f in fs} for comp, fs in files.items()}
        live = self.live_manifest()
        live_hashes = live.get("hashes", {}) if live else {}
        changed = [comp for comp in files if hashes[comp] != live_hashes.get(comp)]
        plan = Plan(doc.name, doc.version, parameters, files, hashes, changed,
                    live.get("number") if live else None)
        plan.diffs = {comp: self._diff(comp, files[comp]) for comp in changed}
        return plan

    def _diff(self, component: str, files: list[RenderedFile]) -> str:
        out = []
        for f in files:
            live_path = self.layout.current / component / f.path
            try:
                old = live_path.read_text().replace(str(self.layout.current), GENERATION_TOKEN)
            except (OSError, UnicodeDecodeError):
                old = ""
            new = f.content
            if component == TLS and f.path.endswith(".key"):
                old, new = ("(private key)\n" if old else ""), "(private key, changed)\n"
            if old != new:
                out += difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                            f"live/{component}/{f.path}", f"new/{component}/{f.path}")
        return "".join(out)

    # ------------------------------------------------------------ generations
    def _live_dir(self) -> Path:
        try:
            return self.layout.current.resolve(strict=True)
        except OSError:
            return self.layout.current

    def live_manifest(self) -> dict | None:
        try:
            return json.loads((self.layout.current / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def drift(self) -> list[dict]:
        """Installed files that differ from what the live generation recorded:
        edited by hand (modified) or deleted (missing)."""
        manifest = self.live_manifest()
        if not manifest:
            return []
        prefix = str(self.layout.current)
        found = []
        for component, files in sorted(manifest["hashes"].items()):
            for path, recorded in sorted(files.items()):
                try:
                    content = (self.layout.current / component / path).read_text()
                except FileNotFoundError:
                    found.append({"component": component, "path": path, "state": "missing"})
                    continue
                except (OSError, UnicodeDecodeError):
                    content = ""
                if sha256(content.replace(prefix, GENERATION_TOKEN)) != recorded:
                    found.append({"component": component, "path": path, "state": "modified"})
        return found

    def plan_from_generation(self, number: int) -> tuple[Plan, Path]:
        """A kept generation as a plan (for a rollback by hand)."""
        gen_dir = self.layout.generations / f"{number:06d}"
        try:
            manifest = json.loads((gen_dir / MANIFEST).read_text())
        except (OSError, ValueError):
            kept = ", ".join(str(n) for n in self.generation_numbers()) or "none"
            raise DeployError(f"generation {number} is not kept on this node (kept: {kept})") from None
        prefix = str(self.layout.current)
        files: dict[str, list[RenderedFile]] = {}
        for component, hashes in manifest["hashes"].items():
            files[component] = []
            for path in hashes:
                real = gen_dir / component / path
                st = real.stat()
                group = grp.getgrgid(st.st_gid).gr_name if st.st_gid != 0 else None
                files[component].append(RenderedFile(path, real.read_text().replace(prefix, GENERATION_TOKEN),
                                                     mode=st.st_mode & 0o7777, group=group))
        live = self.live_manifest() or {}
        changed = [c for c in files if manifest["hashes"][c] != live.get("hashes", {}).get(c)]
        plan = Plan(manifest["template"], manifest["version"], manifest.get("parameters", {}), files,
                    manifest["hashes"], changed, live.get("number"))
        return plan, gen_dir

    def generation_numbers(self) -> list[int]:
        if not self.layout.generations.is_dir():
            return []
        return sorted(int(p.name) for p in self.layout.generations.iterdir() if p.name.isdigit())

    def _materialise(self, plan: Plan, target: Path, prefix: str) -> None:
        """Write the plan's files under `target`, the token replaced by `prefix`."""
        shutil.rmtree(target, ignore_errors=True)
        for component, files in plan.files.items():
            for f in files:
                path = target / component / f.path
                path.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(path.parent, 0o755)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)
                with os.fdopen(fd, "w") as fh:
                    fh.write(f.content.replace(GENERATION_TOKEN, prefix))
                if f.group:
                    os.chown(path, 0, grp.getgrnam(f.group).gr_gid)
                os.chmod(path, f.mode)
        os.chmod(target, 0o755)

    def _write_generation(self, plan: Plan) -> tuple[int, Path]:
        numbers = self.generation_numbers()
        number = (numbers[-1] if numbers else 0) + 1
        gen_dir = self.layout.generations / f"{number:06d}"
        tmp_dir = self.layout.generations / f".{number:06d}.tmp"
        self._materialise(plan, tmp_dir, str(self.layout.current))
        manifest = {"number": number, "template": plan.template, "version": plan.version,
                    "parameters": plan.parameters, "hashes": plan.hashes}
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.rename(tmp_dir, gen_dir)
        # finalize at the final path: compiled artefacts (Sieve binaries) record the
        # location of their source and are "out of date" anywhere else
        try:
            for name, adapter in self.adapters.items():
                if (gen_dir / name).is_dir():
                    adapter.finalize(gen_dir / name)
        except ComponentCheckError as exc:
            shutil.rmtree(gen_dir, ignore_errors=True)
            raise DeployError(f"{exc}\nnothing was changed on this node") from None
        return number, gen_dir

    def _switch(self, gen_dir: Path) -> None:
        link_tmp = self.layout.state / ".current.tmp"
        link_tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(gen_dir, self.layout.state), link_tmp)
        os.replace(link_tmp, self.layout.current)  # atomic: readers see old or new, never neither

    def _prune(self, keep: int) -> None:
        live = self._live_dir().name
        numbers = self.generation_numbers()
        for number in numbers[:-keep] if keep > 0 else []:
            name = f"{number:06d}"
            if name != live:
                shutil.rmtree(self.layout.generations / name, ignore_errors=True)

    # ------------------------------------------------------------ apply
    def check_drift(self, plan: Plan, force: bool) -> list[dict]:
        """Refuse to overwrite hand-edited files unless forced; forced, they count as changed."""
        drifted = self.drift()
        if drifted and not force:
            listing = ", ".join(f"{d['component']}/{d['path']} ({d['state']})" for d in drifted)
            raise DeployError(f"installed files were changed by hand: {listing}; the deploy would overwrite "
                              "them. Keep what you need (in a custom template), then deploy with --force")
        for component in dict.fromkeys(d["component"] for d in drifted):
            if component not in plan.changed:
                plan.changed.append(component)
        return drifted

    def apply(self, plan: Plan, force: bool = False) -> DeployResult:
        self.layout.ensure_base()
        self.check_drift(plan, force)
        if not plan.has_changes:
            result = DeployResult(plan.current_generation, "unchanged")
            result.step("plan", True, "no configuration changes")
            stopped = [c for c in self.adapters if not self.backend.is_running(c)]
            if stopped:
                self._start_or_reload(stopped, [], result)
                self._probe_or_raise(result)
            return result

        previous = self._live_dir() if self.layout.current.exists() else None
        number, gen_dir = self._write_generation(plan)
        result = DeployResult(number, "failed")
        result.step("render", True, f"generation {number}: {', '.join(plan.changed)} changed")
        self._apply_generation(plan, gen_dir, previous, result, discard_invalid=True)
        return result

    def rollback_to(self, number: int, force: bool = False) -> DeployResult:
        """Make a kept generation live again, by hand: the same validate, switch,
        reload and probe as a deploy, and the same automatic return on failure."""
        plan, gen_dir = self.plan_from_generation(number)
        live = self._live_dir() if self.layout.current.exists() else None
        if live is not None and live.name == gen_dir.name:
            raise DeployError(f"generation {number} is already live")
        self.check_drift(plan, force)
        result = DeployResult(number, "failed")
        result.step("rollback by hand", True, f"to generation {number}: {', '.join(plan.changed) or 'no'} changes")
        self._apply_generation(plan, gen_dir, live, result, discard_invalid=False)
        return result

    def _apply_generation(self, plan: Plan, gen_dir: Path, previous: Path | None, result: DeployResult,
                          discard_invalid: bool) -> None:
        """Validate, switch, start/reload, probe, roll back on failure; a DeployError
        carries `result` with every step for the generation record."""
        try:
            self._validate_switch_probe(plan, gen_dir, previous, result, discard_invalid)
        except DeployError as exc:
            exc.result = result
            raise

    def _validate_switch_probe(self, plan: Plan, gen_dir: Path, previous: Path | None, result: DeployResult,
                               discard_invalid: bool) -> None:
        try:
            self._validate(plan, result)
        except ComponentCheckError as exc:
            if discard_invalid:
                shutil.rmtree(gen_dir, ignore_errors=True)
            result.error = str(exc)
            raise DeployError(f"{exc}\nnothing was changed on this node") from None

        self._switch(gen_dir)
        result.step("switch", True, f"current -> {gen_dir.name}")
        to_reload = self._affected(plan.changed)
        try:
            self._start_or_reload(list(self.adapters), to_reload, result)
            self._probe_or_raise(result)
        except DeployError as failure:
            result.error = str(failure)
            self._rollback(previous, to_reload, result, failure)
        result.result = "applied"
        self._prune(self.node.generations_kept)

    def _affected(self, changed: list[str]) -> list[str]:
        affected = set(c for c in changed if c in self.adapters)
        if TLS in changed:
            affected.update(TLS_READERS)
        return [c for c in self.adapters if c in affected]

    def _validate(self, plan: Plan, result: DeployResult) -> None:
        check_dir = self.layout.generations / f".check-{os.getpid()}"
        self._materialise(plan, check_dir, str(check_dir))
        ctx = self.render_context(check_dir)
        try:
            for name, adapter in self.adapters.items():
                try:
                    adapter.validate(check_dir / name, ctx)
                except ComponentCheckError as exc:
                    result.step(f"validate {name}", False, exc.detail)
                    raise
                result.step(f"validate {name}", True)
        finally:
            shutil.rmtree(check_dir, ignore_errors=True)

    def _start_or_reload(self, components: list[str], to_reload: list[str], result: DeployResult) -> None:
        ctx = self.live_context()
        for name in self.adapters:
            if name not in components:
                continue
            spec = self.adapters[name].process(ctx)
            try:
                if not self.backend.is_running(name):
                    self.backend.start(name, spec)
                    result.started.append(name)
                    action = "start"
                elif name in to_reload:
                    self.backend.reload(name, spec)
                    result.reloaded.append(name)
                    action = "reload"
                else:
                    continue
            except Exception as exc:  # a daemon that cannot start is a deploy failure, not a crash
                result.step(f"{name}", False, str(exc))
                raise DeployError(f"{name}: {exc}") from None
            missing = [f"{h}:{p}" for h, p in spec.ports if not probes.wait_for_port(h, p, 30)]
            if missing or not self.backend.is_running(name):
                detail = f"not listening on {', '.join(missing)}" if missing else "exited after start"
                log = self.layout.log_file(name)
                tail = _tail(log)
                result.step(f"{action} {name}", False, detail + (f"; log: {tail}" if tail else ""))
                raise DeployError(f"{name} failed after {action}: {detail}" + (f"\n{tail}" if tail else ""))
            result.step(f"{action} {name}", True)

    def _restart(self, components: list[str], result: DeployResult) -> None:
        try:
            stopped = self.stop_all(components)
        except Exception as exc:  # a daemon that will not stop fails the rollback, not the process
            result.step(f"stop {', '.join(components)}", False, str(exc))
            raise DeployError(f"stopping {', '.join(components)}: {exc}") from None
        for name in stopped:
            result.step(f"stop {name}", True)
        self._start_or_reload(components, [], result)

    def probe_host(self) -> str:
        return "127.0.0.1" if self.node.listen_address in ("*", "0.0.0.0", "::") else self.node.listen_address

    def run_probes(self, patience: float = 10.0) -> list[probes.ProbeResult]:
        """Every daemon already accepts connections (checked after its start or reload);
        the patience only covers a worker that is still reloading. A failing probe
        holds the rollback back by this long, so it stays short."""
        host = self.probe_host()
        checks = [(probes.probe_smtp, self.node.port("smtp")),
                  (probes.probe_submissions, self.node.port("submissions")),
                  (probes.probe_imaps, self.node.port("imaps")),
                  (probes.probe_https, self.node.port("https")),
                  (probes.probe_caldav, self.node.port("https"))]
        # side by side: a failing probe waits out its patience, and a rollback waits for all of them
        with ThreadPoolExecutor(max_workers=len(checks)) as pool:
            return list(pool.map(lambda c: probes.retry(c[0], host, c[1], attempts_for=patience), checks))

    def _probe_or_raise(self, result: DeployResult) -> None:
        failed = []
        for probe in self.run_probes():
            result.step(f"probe {probe.name}", probe.ok, probe.detail)
            if not probe.ok:
                failed.append(f"{probe.name}: {probe.detail}")
        if failed:
            raise DeployError("probe failed: " + "; ".join(failed))

    def _rollback(self, previous: Path | None, to_reload: list[str], result: DeployResult,
                  failure: DeployError) -> None:
        if previous is None:
            self.stop_mail_unit()
            self.layout.current.unlink(missing_ok=True)  # a failed first generation is not "live"
            result.result = "failed"
            result.step("rollback", False, "no previous generation: all mail components stopped")
            raise DeployError(f"{failure}\nthere is no previous generation to return to; "
                              "all mail components were stopped") from None
        self._switch(previous)
        try:
            try:
                self._start_or_reload(list(self.adapters), to_reload, result)
                self._probe_or_raise(result)
            except DeployError:
                # A daemon can keep state from the failed generation through a reload (postfix's
                # master throttles a service whose processes died at start-up for a minute):
                # a restart with the previous files starts from a clean slate.
                self._restart(to_reload, result)
                self._probe_or_raise(result)
        except DeployError as second:
            self.stop_mail_unit()
            result.result = "failed"
            result.step("rollback", False, str(second))
            raise DeployError(f"{failure}\nrollback to generation {previous.name} also failed: {second}; "
                              "the mail components were stopped, the node is out of service") from None
        result.result = "rolled_back"
        result.step("rollback", True, f"returned to generation {previous.name}")
        raise DeployError(f"{failure}\nrolled back to generation {int(previous.name)}: "
                          "the previous configuration is running and answers its probes") from None

    def stop_mail_unit(self) -> list[str]:
        """Stop the mail components together; HAProxy stays up and its health endpoint
        reports the node down, so peers route around it."""
        from adapters import MAIL_UNIT

        return self.stop_all(MAIL_UNIT)

    def stop_all(self, components=None) -> list[str]:
        ctx = self.live_context()
        stopped = []
        for name in reversed(list(self.adapters)):
            if components is not None and name not in components:
                continue
            if self.backend.is_running(name):
                self.backend.stop(name, self.adapters[name].process(ctx))
                stopped.append(name)
        return stopped


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
