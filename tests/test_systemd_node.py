"""The .deb under a real systemd: scripts/test-systemd-node boots systemd 252 as PID 1 of its own
namespaces over the cached Debian 12 root, installs the package built by scripts/test-package and runs
the scenarios of scripts/systemd-node/ there (install, wizard, deploy through SystemdBackend, mail,
reloads, crashes, timers, logrotate, remove/reinstall/purge, upgrade from the previous release).

Minutes long (it shares the .deb and the root with test_deb_install), so it runs only with
RUPOST_TEST_PACKAGE=1, as CI sets it. The figures (messages lost, connections refused, restart time)
and the phase timings are printed by the scenarios as MEASURE and PHASE lines (pytest -s shows them).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.environ.get("RUPOST_TEST_PACKAGE") != "1",
                                reason="slow (minutes): set RUPOST_TEST_PACKAGE=1, or run scripts/test-systemd-node")


def _run(*args: str) -> str:
    run = subprocess.run([str(REPO / "scripts/test-systemd-node"), *args], capture_output=True, text=True,
                         timeout=2400)
    output = run.stdout + run.stderr
    print("\n".join(line for line in output.splitlines() if re.search(r"PHASE|MEASURE|ok  |FAIL", line)))
    assert run.returncode == 0, output[-8000:]
    return output


def test_node_under_systemd_installs_deploys_serves_mail_and_survives_its_scenarios():
    output = _run("node.sh")
    assert "NODE-PASS" in output and "PASS: scenario node.sh under systemd" in output


def test_upgrade_from_the_previous_release_migrates_deploys_and_keeps_mail_flowing():
    output = _run("upgrade.sh")
    assert "UPGRADE-PASS" in output and "PASS: scenario upgrade.sh under systemd" in output
