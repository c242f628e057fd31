"""Packaging checks: systemd units (systemd-analyze verify), the dovecot drop-in,
debian/control dependencies and the maintainer scripts. Fast, no daemons."""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
DEBIAN = ROOT / "debian"
COMPONENTS = ["memcached", "dovecot", "postfix", "sogo", "nginx", "haproxy"]

# product guide: what the package must depend on
REQUIRED_DEPENDS = [
    "postfix", "postfix-pgsql", "postfix-ldap", "dovecot-imapd", "dovecot-lmtpd", "dovecot-pgsql",
    "dovecot-ldap", "dovecot-sieve", "dovecot-managesieved", "sogo", "gnustep-base-runtime", "nginx",
    "libnginx-mod-stream", "haproxy", "memcached", "python3", "dialog", "util-linux",
    # SRS for forwarded mail (component postsrsd)
    "postsrsd",
]
MAINTAINER_SCRIPTS = ["rupost.postinst", "rupost.prerm", "rupost.postrm"]


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer", ".socket", ".target"))


def parse_unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",),
                                   comment_prefixes=("#", ";"), empty_lines_in_values=False)
    cp.optionxform = str
    cp.read(path)
    return cp


# ------------------------------------------------------------ systemd-analyze verify
def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    # CI installs the runtime packages only; systemd-analyze comes with the
    # Debian package `systemd` (it does not need systemd to be PID 1).
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "systemd"]
        if subprocess.run(cmd, capture_output=True, env=env, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
            subprocess.run(cmd, capture_output=True, env=env, timeout=600)
        found = shutil.which("systemd-analyze")
        if found:
            return found
    pytest.fail("systemd-analyze is absent and could not be installed (apt-get install systemd)")


@pytest.fixture(scope="module")
def analyze() -> str:
    return _systemd_analyze()


def staged_units(dest: Path, mutate=None) -> Path:
    """Copy systemd/ into dest with /usr/bin/rupost pointing at an executable stub
    (verify checks that every Exec*= binary exists) and a stand-in dovecot.service
    for the drop-in. Nothing else is changed, so syntax errors and unknown keys
    reach systemd-analyze as they are."""
    stub = dest / "bin" / "rupost"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = dest / "units"
    shutil.copytree(UNITS, units, ignore=shutil.ignore_patterns("__pycache__"))
    for path in units.rglob("*"):
        if path.is_file():
            text = path.read_text()
            path.write_text(text.replace("/usr/bin/rupost", str(stub)))
    (units / "dovecot.service").write_text("[Unit]\nDescription=stand-in for Debian's dovecot.service\n\n"
                                           "[Service]\nExecStart=/bin/true\n")
    if mutate:
        mutate(units)
    return units


def verify_targets(units: Path) -> list[Path]:
    targets = [p for p in sorted(units.iterdir()) if p.is_file() and p.suffix in (".service", ".timer")
               and p.name != "dovecot.service" and not p.name.endswith("@.service")]
    # a template is verified through its instances, so that the per-instance
    # drop-ins (rupost-component@sogo.service.d/) are loaded too
    for template in sorted(units.glob("*@.service")):
        targets += [units / template.name.replace("@.", f"@{c}.") for c in COMPONENTS]
    targets.append(units / "dovecot.service")  # loads dovecot.service.d/override.conf
    return targets


def verify(analyze: str, target: Path) -> str:
    """Problems systemd-analyze reports for one unit: a non-zero exit or any
    message at all (unknown keys are only warned about, with exit code 0)."""
    # --man=no: Documentation=man:rupost(1) exists only once the package is installed
    proc = subprocess.run([analyze, "verify", "--man=no", str(target)], capture_output=True, text=True,
                          timeout=60, cwd=target.parent)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or out:
        return f"{target.name}: exit {proc.returncode}: {out}"
    return ""


def test_units_exist():
    names = {p.name for p in unit_files()}
    assert {"rupost.service", "rupost-component@.service", "rupost-scheduler.service",
            "rupost-distribution-lists-updater.service", "rupost-distribution-lists-updater.timer",
            "rupost-mailqueue-evacuator.service", "rupost-mailqueue-evacuator.timer"} <= names


def test_units_pass_systemd_analyze_verify(analyze, tmp_path):
    units = staged_units(tmp_path)
    problems = [p for p in (verify(analyze, t) for t in verify_targets(units)) if p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("breakage", ["unknown-key", "bad-section", "missing-binary", "dropin-typo"])
def test_verify_catches_broken_units(analyze, tmp_path, breakage):
    """The check above is honest: each kind of mistake makes it fail."""
    def mutate(units: Path):
        if breakage == "unknown-key":
            path = units / "rupost.service"
            path.write_text(path.read_text().replace("Restart=on-failure", "Restart=on-failure\nRestartt=5"))
        elif breakage == "bad-section":
            path = units / "rupost-mailqueue-evacuator.timer"
            path.write_text(path.read_text().replace("[Timer]", "[Timer"))
        elif breakage == "missing-binary":
            path = units / "rupost-scheduler.service"
            path.write_text(path.read_text().replace("ExecStart=", "ExecStart=/nonexistent/rupost-missing ", 1))
        else:
            path = units / "rupost-component@sogo.service.d" / "stop.conf"
            path.write_text(path.read_text() + "TimeoutStopSecc=5s\n")

    units = staged_units(tmp_path, mutate)
    problems = [p for p in (verify(analyze, t) for t in verify_targets(units)) if p]
    assert problems, f"{breakage}: systemd-analyze verify reported nothing"


# ------------------------------------------------------------ unit contents
def test_component_unit_matches_the_systemd_backend():
    from rupost.deploy.backend import DAEMON_ENV, SystemdBackend

    template = SystemdBackend.unit("sogo").replace("@sogo.", "@.")
    cp = parse_unit(UNITS / template)
    svc = cp["Service"]
    assert set(svc["Environment"].split()) == {f"{k}={v}" for k, v in DAEMON_ENV.items() if k != "PATH"}
    assert svc["ExecStart"] == "/usr/bin/rupost components exec %i"
    assert svc["ExecReload"] == "/usr/bin/rupost components reload-daemon %i --pid $MAINPID"
    assert svc["Type"] == "simple"
    assert svc["Restart"] == "no"
    assert svc["KillMode"] in ("control-group", "mixed")
    # sogo's argv needs mount namespaces, setuid dropping and writable /var trees
    for key in ("PrivateTmp", "ProtectSystem", "NoNewPrivileges", "RestrictNamespaces",
                "CapabilityBoundingSet", "ProtectHome", "ReadOnlyPaths", "DynamicUser"):
        assert key not in svc, f"{template}: {key} would break a component"
    assert "Install" not in cp, "the agent starts the components, they are not enabled"
    sogo = parse_unit(UNITS / "rupost-component@sogo.service.d" / "stop.conf")
    assert sogo["Service"]["TimeoutStopSec"]


def test_component_output_files_are_the_direct_backends():
    """Each component's stdout goes to Layout.output_file under both backends: the unit's
    StandardOutput=append: or, for the daemons that open their own component.log by name (a
    rotated stdout could not be reopened), an output.conf drop-in naming component-stdout.log."""
    from rupost.paths import OWN_LOG_FILE, Layout

    layout = Layout(Path("/"))
    template = parse_unit(UNITS / "rupost-component@.service")["Service"]["StandardOutput"]
    for name in ["policy", "opendkim", "postsrsd", *COMPONENTS]:
        dropin = UNITS / f"rupost-component@{name}.service.d" / "output.conf"
        output = parse_unit(dropin)["Service"]["StandardOutput"] if dropin.exists() else template.replace("%i", name)
        assert output == f"append:{layout.output_file(name)}", name
        assert (layout.output_file(name) != layout.log_file(name)) == (name in OWN_LOG_FILE), name
    logrotate = (DEBIAN / "rupost.logrotate").read_text()
    assert all(f"/var/log/rupost/{name}-stdout.log\n" in logrotate for name in OWN_LOG_FILE)


def test_service_commands():
    expected = {
        "rupost.service": "/usr/bin/rupost run",
        "rupost-scheduler.service": "/usr/bin/rupost scheduler",
        "rupost-distribution-lists-updater.service": "/usr/bin/rupost distribution-lists update-all",
        "rupost-mailqueue-evacuator.service": "/usr/bin/rupost mailqueues evacuate",
    }
    for name, command in expected.items():
        assert parse_unit(UNITS / name)["Service"]["ExecStart"] == command, name


def test_timers():
    evac = parse_unit(UNITS / "rupost-mailqueue-evacuator.timer")["Timer"]
    assert evac["OnUnitActiveSec"] in ("60s", "1min", "1m", "60") and evac["OnBootSec"]
    lists = parse_unit(UNITS / "rupost-distribution-lists-updater.timer")["Timer"]
    assert lists["OnUnitActiveSec"] in ("15min", "15m", "900s", "900")
    assert lists["Persistent"] == "true"
    for name in ("rupost-mailqueue-evacuator.timer", "rupost-distribution-lists-updater.timer"):
        assert parse_unit(UNITS / name)["Install"]["WantedBy"] == "timers.target"


def test_dovecot_dropin_limits():
    cp = parse_unit(UNITS / "dovecot.service.d" / "override.conf")
    assert cp.sections() == ["Service"]
    assert cp["Service"]["LimitNOFILE"] == "1048576"
    assert cp["Service"]["LimitNPROC"] == "4194304"
    # and the package installs it where the product guide says
    assert "/etc/systemd/system/dovecot.service.d/override.conf" in (DEBIAN / "rules").read_text()


def _load_maxima() -> dict[str, int]:
    """The largest load the builtin template's parameters allow."""
    import yaml

    specs = yaml.safe_load((ROOT / "templates" / "builtin" / "standard.yaml").read_text())["parameters"]
    return {name: specs[name]["max"] for name in ("max_imap_sessions", "max_smtp_sessions", "max_web_sessions")}


def test_units_grant_the_open_files_of_the_largest_load_the_template_allows():
    """LimitNOFILE of the daemons' units covers limits.open_files at every load a template value
    may ask for (a deploy refuses a load beyond the backend's grant), and stays within the
    kernel's default fs.nr_open (systemd cannot set more)."""
    from rupost.templating.limits import derive_limits

    needed = derive_limits(_load_maxima()).open_files
    for unit in ("rupost-component@.service", "rupost.service", "dovecot.service.d/override.conf"):
        granted = int(parse_unit(UNITS / unit)["Service"]["LimitNOFILE"])
        assert needed <= granted <= 1048576, (unit, needed, granted)


def _sysctl_dropin() -> dict[str, int]:
    values = {}
    for line in (UNITS / "sysctl.d" / "60-rupost.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = int(value.strip())
    return values


def test_sysctl_dropin_carries_the_load_the_package_is_sized_for():
    from rupost.templating.limits import KERNEL_SETTINGS, PACKAGE_KERNEL_LOAD, derive_limits

    values = _sysctl_dropin()
    limits = derive_limits(PACKAGE_KERNEL_LOAD)
    assert sorted(values) == sorted(sysctl for sysctl, _, _ in KERNEL_SETTINGS)
    for sysctl, proc_path, field in KERNEL_SETTINGS:
        assert values[sysctl] >= getattr(limits, field), sysctl
        assert Path(proc_path).exists() and proc_path == "/proc/sys/" + sysctl.replace(".", "/")
    # never below the largest default the kernel picks for watches (it scales with memory)
    assert values["fs.inotify.max_user_watches"] >= 1048576
    # the package installs it where systemd-sysctl reads it at boot, and postinst applies it now
    assert ("systemd/sysctl.d/60-rupost.conf $(DESTDIR)/usr/lib/sysctl.d/60-rupost.conf"
            in (DEBIAN / "rules").read_text())
    postinst = "\n".join(_code_lines(DEBIAN / "rupost.postinst"))
    configure = postinst.split("configure)", 1)[1].split(";;", 1)[0]
    assert "\tapply_sysctl\n" in configure
    assert 'sysctl -q -p "$conf"' in postinst and "conf=/etc/sysctl.d/60-rupost.conf" in postinst


# ------------------------------------------------------------ debian/
def _control_paragraphs() -> list[dict]:
    paragraphs, current, key = [], {}, None
    for line in (DEBIAN / "control").read_text().splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif not line.startswith("#"):
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def test_control_depends_on_the_mail_stack():
    binary = next(p for p in _control_paragraphs() if p.get("Package") == "rupost")
    depends = {re.split(r"[\s(\[]", alt.strip())[0]
               for item in binary["Depends"].split(",") for alt in item.split("|") if alt.strip()}
    missing = [p for p in REQUIRED_DEPENDS if p not in depends]
    assert not missing, f"debian/control Depends lacks: {missing}"


def test_changelog_version_is_the_application_version():
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    version = re.match(r"rupost \(([^)]+)\)", first).group(1)
    app = re.search(r'__version__ = "([^"]+)"', (ROOT / "rupost" / "__init__.py").read_text()).group(1)
    assert version.split("-")[0].split(":")[-1] == app


def _code_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0] if not line.lstrip().startswith("#DEBHELPER#") else line
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("script", MAINTAINER_SCRIPTS)
def test_maintainer_script_syntax_and_conventions(script):
    path = DEBIAN / script
    proc = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert re.search(r"^set -e$", text, re.M)
    assert "#DEBHELPER#" in text


@pytest.mark.parametrize("script", MAINTAINER_SCRIPTS)
def test_maintainer_scripts_never_delete_mail_queues_or_databases(script):
    code = "\n".join(_code_lines(DEBIAN / script))
    # no command line that removes or empties mail, queues, state or databases
    for line in code.splitlines():
        if re.search(r"\b(rm|rmdir|find|mv|truncate|shred)\b", line):
            for protected in ("/var/vmail", "/var/spool/rupost", "/var/lib/rupost", "/var/lib/postgresql"):
                assert protected not in line, f"{script}: {line.strip()}"
    assert "rm -rf /var/vmail" not in code
    assert not re.search(r"dropdb|drop\s+database|postsuper\s+-d", code, re.I), script


def test_purge_removes_config_and_logs_only():
    code = "\n".join(_code_lines(DEBIAN / "rupost.postrm"))
    purge = code.split("purge)", 1)[1].split(";;", 1)[0]
    assert "/etc/rupost/config.json" in purge
    assert "rm -rf /var/log/rupost" in purge
    assert "rm -rf /etc/rupost" not in purge


def test_prerm_stops_only_on_remove():
    code = "\n".join(_code_lines(DEBIAN / "rupost.prerm"))
    remove = code.split("remove | deconfigure)", 1)[1].split(";;", 1)[0]
    assert "stop_everything" in remove
    upgrade = code.split("upgrade | failed-upgrade)", 1)[1].split(";;", 1)[0]
    assert "stop" not in upgrade, "an upgrade must not stop mail"
    assert "rupost components stop" in code
