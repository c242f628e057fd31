"""The component registry is the only list of components: a component declared once, in a
test, reaches the template document's sections, the probes, the TLS readers, the mail unit
and the log reopening, through the same code the deploy pipeline and the agent run.

No daemons here: a recording backend stands in for the service backend, and the log
reopening signals a real child process."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters import (COMPONENTS, Adapter, ComponentRegistry, LogReopen, Probe, ProcessSpec, RenderContext,
                      RenderedFile, all_adapters)
from adapters.probes import ProbeResult
from rupost.config import NodeConfig
from rupost.deploy.pipeline import DeployPipeline
from rupost.deploy.runtime import ComponentRuntime
from rupost.deploy.store import GenerationStore
from rupost.errors import TemplateError
from rupost.paths import Layout
from rupost.templating import builtin_dir, load_document

PROBED: list[tuple[str, int]] = []


def probe_dummy(host: str, port: int) -> ProbeResult:
    PROBED.append((host, port))
    return ProbeResult("dummy", True, f"{host}:{port}")


class DummyAdapter(Adapter):
    name = "dummy"
    reads_tls = True
    in_mail_unit = True
    optional_section = True
    log_reopen = LogReopen.SIGUSR1
    probes = (Probe(probe_dummy, "imaps"),)

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        return [RenderedFile("dummy.conf", "# dummy\n")]

    def process(self, ctx: RenderContext) -> ProcessSpec:
        return ProcessSpec(argv=["true"])


class RecordingBackend:
    """Stands in for the service backend: which component runs under which pid, what was stopped."""

    def __init__(self, running: dict[str, int]):
        self.running = dict(running)
        self.stopped: list[str] = []

    def is_running(self, component: str, spec=None) -> bool:
        return component in self.running

    def pid(self, component: str, spec=None) -> int | None:
        return self.running.get(component)

    def start(self, component: str, spec: ProcessSpec) -> None:
        raise AssertionError("not started in these tests")

    def reload(self, component: str, spec: ProcessSpec) -> None:
        raise AssertionError("not reloaded in these tests")

    def stop(self, component: str, spec: ProcessSpec) -> None:
        self.stopped.append(component)
        del self.running[component]


@pytest.fixture
def registry() -> ComponentRegistry:
    return ComponentRegistry([*all_adapters().values(), DummyAdapter()])


def runtime_for(registry: ComponentRegistry, tmp_path: Path, backend: RecordingBackend) -> ComponentRuntime:
    return ComponentRuntime(live(Layout.at(tmp_path), registry), NodeConfig(node_name="t", fqdn="t.example"),
                            registry, backend)


def live(layout: Layout, registry: ComponentRegistry, *left_out: str) -> Layout:
    """A live generation with a directory for each component of `registry` but `left_out`."""
    for name in registry:
        if name not in left_out:
            (layout.current / name).mkdir(parents=True, exist_ok=True)
    return layout


def test_the_shipped_registry_lists_every_adapter_once_in_dependency_order():
    names = [cls.name for cls in COMPONENTS]
    assert names == list(all_adapters()) and len(set(names)) == len(names)
    assert names.index("policy") < names.index("dovecot") and names.index("opendkim") < names.index("postfix")
    assert names[-1] == "haproxy"


def test_a_declared_component_is_probed(registry, tmp_path):
    runtime = runtime_for(registry, tmp_path, RecordingBackend({}))
    planned = [(p.component, p.port) for p in runtime.planned_probes()]
    assert ("dummy", runtime.node.port("imaps")) in planned
    PROBED.clear()
    results = runtime.run_probes(patience=0)
    assert ("127.0.0.1", runtime.node.port("imaps")) in PROBED
    assert "dummy" in [r.name for r in results]


def test_a_component_the_live_generation_lacks_is_neither_started_supervised_nor_probed(registry, tmp_path):
    """An upgrade installs adapters the live generation has no files for yet (the deploy after
    it renders them): starting one would fail for want of its configuration, and the agent
    would report it down; until that deploy it is not part of the node."""
    layout = live(Layout.at(tmp_path), registry, "dummy")
    runtime = ComponentRuntime(layout, NodeConfig(node_name="t", fqdn="t.example"), registry, RecordingBackend({}))
    assert "dummy" not in runtime.deployed() and "dummy" not in runtime.states()
    assert "dummy" not in {p.component for p in runtime.planned_probes()}
    assert runtime.start(["dummy"]) == []  # the backend refuses any start in these tests
    (layout.current / "dummy").mkdir()
    assert "dummy" in runtime.states()
    assert "dummy" in {p.component for p in runtime.planned_probes()}


def test_a_declared_tls_reader_reloads_when_the_certificate_changes(registry, tmp_path):
    runtime = runtime_for(registry, tmp_path, RecordingBackend({}))
    pipeline = DeployPipeline(GenerationStore(runtime.layout), runtime, generations_kept=3)
    assert "dummy" in pipeline.affected(["tls"])
    assert "dummy" not in pipeline.affected(["postfix"])
    assert "dummy" in registry.tls_readers


def test_a_declared_mail_unit_member_stops_with_the_unit(registry, tmp_path):
    backend = RecordingBackend({"dummy": 1, "dovecot": 2, "haproxy": 3})
    runtime = runtime_for(registry, tmp_path, backend)
    assert runtime.with_mail_unit(["dummy"]) >= {"dummy", "dovecot", "postfix", "sogo", "nginx"}
    assert runtime.with_mail_unit(["haproxy"]) == {"haproxy"}
    assert sorted(runtime.stop_mail_unit()) == ["dovecot", "dummy"]
    assert backend.running == {"haproxy": 3}


def test_a_declared_log_reopener_is_signalled(registry, tmp_path):
    marker = tmp_path / "reopened"
    child = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: open({str(marker)!r}, 'w').close())\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        runtime = runtime_for(registry, tmp_path, RecordingBackend({"dummy": child.pid}))
        done = runtime.reopen_logs()
        assert done["dummy"] == "reopened" and done["haproxy"] == "stdout only (copytruncate)"
        assert done["dovecot"] == "not running"
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the dummy component did not receive SIGUSR1"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def test_a_declared_section_is_part_of_the_template_document(registry):
    text = (builtin_dir() / "standard.yaml").read_text()
    doc = load_document(text, "standard.yaml", components=registry)
    assert doc.data["components"]["dummy"] == {}  # optional: the adapter's defaults

    class RequiredDummy(DummyAdapter):
        optional_section = False

    strict = ComponentRegistry([*all_adapters().values(), RequiredDummy()])
    with pytest.raises(TemplateError, match="dummy"):
        load_document(text, "standard.yaml", components=strict)


def test_a_loopback_only_component_is_probed_on_loopback_whatever_the_public_address(tmp_path):
    node = NodeConfig(node_name="t", fqdn="t.example", listen_address="10.9.9.9")
    runtime = ComponentRuntime(live(Layout.at(tmp_path), all_adapters()), node, all_adapters(), RecordingBackend({}))
    planned = {(p.component, p.host, p.port) for p in runtime.planned_probes()}
    assert ("postsrsd", "127.0.0.1", node.port("srs_forward")) in planned
    assert ("postfix", "10.9.9.9", node.port("smtp")) in planned
