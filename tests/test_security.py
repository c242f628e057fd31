"""TLS hardening checked from outside: testssl.sh against the public TLS ports of a deployed node.

The node presents a chain from a test CA (tests/test_certificates.PKI) and testssl.sh
is given that CA (--add-ca), so a finding means the TLS configuration, not the
fact that a test certificate is not publicly trusted.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

import pytest

from rupost.services.certificates import CertificateService
from test_certificates import PKI, key_pem, pem, write

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
BAD = {"HIGH", "CRITICAL"}


@pytest.fixture(scope="module")
def trusted_chain(node, tmp_path_factory):
    """The node presents root -> intermediate -> leaf for its mail host; the root file for clients."""
    tmp = tmp_path_factory.mktemp("pki")
    pki = PKI(node.app.settings.mail_host())
    name = f"sec-{uuid.uuid4().hex[:6]}"
    cert_path, key_path = write(tmp, pem(pki.leaf, pki.intermediate), key_pem(pki.leaf_key))
    service = CertificateService(node.app)
    service.add(name, "mail", cert_path, key_path, login="tests", activate=True)
    node.app.deploys.deploy()
    root = tmp / "root.pem"
    root.write_text(pem(pki.root))
    yield pki, root
    service.activate("rupost-builtin")
    node.app.deploys.deploy()
    service.remove(name)


PORTS = {"imaps": [], "submissions": [], "https": ["-h"], "smtp": ["--starttls", "smtp"]}


def start_testssl(host: str, port: int, root_ca, out, extra: list[str]) -> subprocess.Popen:
    # the checks of a default run except client simulation (-c), the slowest part;
    # HTTP headers (-h: HSTS) only where there is HTTP
    checks = ["-p", "-s", "-f", "-P", "-S", "-U"]
    return subprocess.Popen([TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--fast", "--sneaky", *checks,
                             "--ip", "127.0.0.1", "--add-ca", str(root_ca), "--connect-timeout", "10",
                             "--openssl-timeout", "10", "--jsonfile", str(out), *extra, f"{host}:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.skipif(TESTSSL is None, reason="testssl.sh is not installed (scripts/install-deps --test)")
def test_testssl_finds_nothing_high_or_critical(node, trusted_chain, tmp_path):
    """IMAPS 993, submission 465, HTTPS 443 and SMTP STARTTLS 25, scanned in parallel (bounded: 10 min)."""
    pki, root = trusted_chain
    started = time.monotonic()
    scans = {name: (tmp_path / f"{name}.json", start_testssl(pki.host, node.ports[name], root,
                                                              tmp_path / f"{name}.json", extra))
             for name, extra in PORTS.items()}
    problems = []
    for name, (out, proc) in scans.items():
        try:
            output, _ = proc.communicate(timeout=max(1.0, 600 - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            problems.append(f"{name}: testssl.sh did not finish within 10 minutes")
            continue
        assert out.exists(), f"{name}: testssl.sh wrote no report (exit {proc.returncode}): {output[-2000:]}"
        findings = json.loads(out.read_text())
        by_id = {f["id"]: f for f in findings}
        # the scan really reached the server: protocols and the certificate were examined
        assert {"TLS1_2", "TLS1_3", "cert_chain_of_trust"} <= set(by_id), (name, sorted(by_id)[:40])
        problems += [f"{name} {f['id']}: {f['severity']}: {f['finding']}" for f in findings if f["severity"] in BAD]
        for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            assert "not offered" in by_id[old]["finding"], (name, by_id[old])
        assert by_id["TLS1_2"]["finding"].startswith("offered"), (name, by_id["TLS1_2"])
        assert by_id["cert_chain_of_trust"]["severity"] == "OK", (name, by_id["cert_chain_of_trust"])
        notes = [f"{f['id']}={f['severity']}" for f in findings if f["severity"] in ("MEDIUM", "LOW")]
        print(f"testssl.sh {name}: {len(findings)} findings, MEDIUM/LOW: {', '.join(notes) or 'none'}")
    print(f"testssl.sh: 4 ports in {time.monotonic() - started:.1f}s")
    if "https" in scans:
        https = {f["id"]: f for f in json.loads(scans["https"][0].read_text())}
        assert https["HSTS_time"]["severity"] == "OK", https["HSTS_time"]
    assert problems == [], "\n".join(problems)
