"""Certificates and DH parameters: validation on import, activation, deploy to the daemons, expiry warnings.

A test CA is built with cryptography (root -> intermediate -> leaf); after a deploy
the chain the daemons present on the public ports is read back with
`openssl s_client -showcerts` and compared byte for byte.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import subprocess
import textwrap
import uuid

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from rupost.cli import main as rupost
from rupost.errors import ConflictError, ValidationError
from rupost.services.certificates import CertificateService, DHParamService
from rupost.tls import FFDHE3072_PEM, is_probable_prime

NOW = dt.datetime.now(dt.timezone.utc)


def cli(node, *args, input=None):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], input=input, catch_exceptions=False)


# ------------------------------------------------------------------ a test PKI
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RuPost tests")])


def issue(subject: str, key, issuer_cert=None, issuer_key=None, ca=False, names=(), days=365,
          not_before=None, hash_alg=None):
    not_before = not_before or NOW - dt.timedelta(days=1)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject))
               .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_before + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                        critical=False)
    if issuer_cert is not None:
        # where a corporate CA publishes revocation (testssl.sh rates a certificate without one HIGH)
        crl = x509.DistributionPoint([x509.UniformResourceIdentifier("http://pki.rupost.test/ca.crl")],
                                     None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([crl]), critical=False)
    signer = issuer_key or key
    alg = None if isinstance(signer, ed25519.Ed25519PrivateKey) else (hash_alg or hashes.SHA256())
    return builder.sign(signer, alg)


def pem(*certs) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class PKI:
    """root -> intermediate -> leaf for the node's mail host name."""

    def __init__(self, host: str, leaf_days: int = 365):
        self.host = host
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.root = issue("RuPost Test Root CA", self.root_key, ca=True, days=3650)
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = issue("RuPost Test Intermediate CA", self.int_key, self.root, self.root_key, ca=True,
                                  days=1825)
        self.leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.leaf = issue(host, self.leaf_key, self.intermediate, self.int_key, names=[host, f"*.{host}"],
                          days=leaf_days)


@pytest.fixture(scope="module")
def pki(node):
    return PKI(node.app.settings.mail_host())


def write(tmp_path, cert_text: str, key_text: str):
    name = uuid.uuid4().hex[:8]
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_text(cert_text)
    key_path.write_text(key_text)
    return str(cert_path), str(key_path)


def add(node, tmp_path, cert_text, key_text, cert_type="mail", activate=False):
    name = f"t-{uuid.uuid4().hex[:8]}"
    cert_path, key_path = write(tmp_path, cert_text, key_text)
    return name, CertificateService(node.app).add(name, cert_type, cert_path, key_path, login="tester",
                                                  activate=activate)


def assert_rejected(node, tmp_path, cert_text, key_text, *fragments):
    before = CertificateService(node.app).list()
    with pytest.raises(ValidationError) as err:
        add(node, tmp_path, cert_text, key_text)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert CertificateService(node.app).list() == before  # nothing stored
    return str(err.value)


# ------------------------------------------------------------------ import rejects
def test_import_rejects_mismatched_key(node, pki, tmp_path):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_rejected(node, tmp_path, pem(pki.leaf, pki.intermediate), key_pem(other),
                    "private key does not match the certificate", "a different key")


def test_import_rejects_key_of_another_algorithm(node, pki, tmp_path):
    # an EC key offered for an RSA certificate
    assert_rejected(node, tmp_path, pem(pki.leaf, pki.intermediate), key_pem(ec.generate_private_key(ec.SECP256R1())),
                    "private key does not match", "the key is EC P-256", "public key is RSA 2048")


def test_import_rejects_ed25519_and_weak_keys(node, pki, tmp_path):
    host = pki.host
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_cert = issue(host, ed, names=[host])
    assert_rejected(node, tmp_path, pem(ed_cert), key_pem(ed), "Ed25519 key", "RSA (>= 2048 bits) or ECDSA")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_cert = issue(host, weak, pki.intermediate, pki.int_key, names=[host])
    assert_rejected(node, tmp_path, pem(weak_cert, pki.intermediate), key_pem(weak), "RSA 1024-bit key",
                    "at least 2048")
    p521 = ec.generate_private_key(ec.SECP521R1())
    p521_cert = issue(host, p521, pki.intermediate, pki.int_key, names=[host])
    assert_rejected(node, tmp_path, pem(p521_cert, pki.intermediate), key_pem(p521), "secp521r1",
                    "only P-256 and P-384")


def test_import_rejects_expired_and_not_yet_valid(node, pki, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    expired = issue(pki.host, key, pki.intermediate, pki.int_key, names=[pki.host],
                    not_before=NOW - dt.timedelta(days=400), days=365)
    assert_rejected(node, tmp_path, pem(expired, pki.intermediate), key_pem(key), "the certificate expired on")
    future = issue(pki.host, key, pki.intermediate, pki.int_key, names=[pki.host],
                   not_before=NOW + dt.timedelta(days=3))
    assert_rejected(node, tmp_path, pem(future, pki.intermediate), key_pem(key), "is not valid yet")


def test_import_rejects_wrong_san(node, pki, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    wrong = issue("mail.example.org", key, pki.intermediate, pki.int_key, names=["mail.example.org",
                                                                                  f"x.y.{pki.host}"])
    assert_rejected(node, tmp_path, pem(wrong, pki.intermediate), key_pem(key),
                    f"does not cover {pki.host}", "its names: mail.example.org")
    no_san = issue(pki.host, key, pki.intermediate, pki.int_key)
    assert_rejected(node, tmp_path, pem(no_san, pki.intermediate), key_pem(key), "has no subjectAltName")


def test_import_rejects_garbage(node, pki, tmp_path):
    assert_rejected(node, tmp_path, "this is not a certificate\n", key_pem(pki.leaf_key), "holds no PEM certificate")
    lines = pem(pki.leaf).splitlines(keepends=True)
    broken = lines[0] + "".join(line.replace("A", "B") for line in lines[1:-1]) + lines[-1]
    assert_rejected(node, tmp_path, broken, key_pem(pki.leaf_key), "not a valid PEM certificate")
    assert_rejected(node, tmp_path, pem(pki.leaf), "garbage", "holds no PEM private key")
    # the key file given in place of the certificate and vice versa
    assert_rejected(node, tmp_path, key_pem(pki.leaf_key), pem(pki.leaf), "holds no PEM certificate")
    encrypted = pki.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"secret")).decode()
    assert_rejected(node, tmp_path, pem(pki.leaf, pki.intermediate), encrypted, "encrypted with a passphrase")
    service = CertificateService(node.app)
    with pytest.raises(ValidationError, match="does not exist"):
        service.add("t-missing", "mail", str(tmp_path / "nope.crt"), str(tmp_path / "nope.key"))
    binary = tmp_path / "der.crt"
    binary.write_bytes(pki.leaf.public_bytes(serialization.Encoding.DER))
    with pytest.raises(ValidationError, match="not a PEM text file"):
        service.add("t-der", "mail", str(binary), str(binary))
    with pytest.raises(ValidationError, match="invalid certificate name"):
        service.add("bad name/..", "mail", str(binary), str(binary))
    with pytest.raises(ValidationError, match="invalid certificate type"):
        service.add("t-type", "web", str(binary), str(binary))


def test_import_rejects_truncated_and_misordered_chain(node, pki, tmp_path):
    # leaf followed directly by the root: the intermediate between them is missing
    msg = assert_rejected(node, tmp_path, pem(pki.leaf, pki.root), key_pem(pki.leaf_key),
                          "chain is incomplete or out of order")
    assert "RuPost Test Intermediate CA" in msg and "RuPost Test Root CA" in msg
    # the chain given root first
    assert_rejected(node, tmp_path, pem(pki.root, pki.intermediate, pki.leaf), key_pem(pki.leaf_key),
                    "belongs to certificate 3", "must come first")
    # an intermediate of the same name but another key (a re-keyed CA) did not sign the leaf
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    impostor = issue("RuPost Test Intermediate CA", impostor_key, pki.root, pki.root_key, ca=True)
    assert_rejected(node, tmp_path, pem(pki.leaf, impostor), key_pem(pki.leaf_key),
                    "is not signed by the key of certificate 2")


# ------------------------------------------------------------------ accepted, deployed, presented
def presented_chain(port: int, starttls: str | None = None, servername: str | None = None) -> list[bytes]:
    """The DER certificates a server sends, in order, read with openssl s_client -showcerts."""
    cmd = ["openssl", "s_client", "-showcerts", "-connect", f"127.0.0.1:{port}"]
    if starttls:
        cmd += ["-starttls", starttls]
    if servername:
        cmd += ["-servername", servername]
    r = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=30)
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", r.stdout, re.S)
    assert blocks, f"no certificate from port {port}: {r.stderr[-500:]}"
    return [x509.load_pem_x509_certificate(b.encode()).public_bytes(serialization.Encoding.DER) for b in blocks]


def test_valid_chain_is_accepted_deployed_and_presented_by_nginx_and_postfix(node, pki, tmp_path):
    name = f"corp-{uuid.uuid4().hex[:6]}"
    cert_path, key_path = write(tmp_path, pem(pki.leaf, pki.intermediate), key_pem(pki.leaf_key))
    r = cli(node, "cert", "add", name, "--login", "mailadmin", "--cert-type", "mail", "--cert-path", cert_path,
            "--key-path", key_path)
    assert r.exit_code == 0, r.output
    assert f"{name} is now the active mail certificate; run `rupost deploy`" in r.output
    assert "note: the chain ends at" in r.output  # root not included: allowed, reported
    shown = json.loads(cli(node, "cert", "show", name, "--json").output)
    assert shown["active"] and shown["added_by"] == "mailadmin" and shown["key_type"] == "RSA 2048"
    assert shown["chain"][1].startswith("O=RuPost tests,CN=RuPost Test Intermediate CA") or \
        "RuPost Test Intermediate CA" in shown["chain"][1]
    listed = {c["name"]: c for c in json.loads(cli(node, "cert", "list", "--json").output)}
    assert listed[name]["active"] and not listed["rupost-builtin"]["active"]
    expected = [c.public_bytes(serialization.Encoding.DER) for c in (pki.leaf, pki.intermediate)]
    try:
        result = node.app.deploys.deploy()
        assert result.result == "applied", result.error
        assert {"nginx", "postfix", "dovecot"} <= set(result.reloaded)
        assert presented_chain(node.ports["imaps"]) == expected
        assert presented_chain(node.ports["https"], servername=pki.host) == expected
        assert presented_chain(node.ports["submissions"]) == expected
        assert presented_chain(node.ports["smtp"], starttls="smtp") == expected
        assert presented_chain(node.ports["sieve"], starttls="sieve") == expected  # dovecot's own TLS
        # the active certificate cannot be removed
        r = cli(node, "cert", "remove", name)
        assert r.exit_code == 1 and "is the active mail certificate" in r.output
    finally:
        assert cli(node, "cert", "activate", "rupost-builtin").exit_code == 0
        node.app.deploys.deploy()
    builtin = x509.load_pem_x509_certificate(
        (node.layout.current / "tls" / "mail.crt").read_bytes()).public_bytes(serialization.Encoding.DER)
    assert presented_chain(node.ports["imaps"]) == [builtin]
    assert cli(node, "cert", "remove", name).exit_code == 0
    assert name not in {c["name"] for c in CertificateService(node.app).list()}


def test_full_chain_with_root_and_control_panel_certificate(node, pki, tmp_path):
    name, info = add(node, tmp_path, pem(pki.leaf, pki.intermediate, pki.root), key_pem(pki.leaf_key),
                     cert_type="control_panel")
    assert info["warnings"] == [] and not info["active"]
    assert "control panel" in info["used_by"]
    service = CertificateService(node.app)
    before = {c["name"]: c["active"] for c in service.list()}
    assert before["rupost-control-panel-builtin"] and before["rupost-builtin"]
    r = cli(node, "cert", "activate", name)
    assert r.exit_code == 0 and "control panel uses it after a restart" in r.output
    after = {c["name"]: c["active"] for c in service.list()}
    assert after[name] and not after["rupost-control-panel-builtin"] and after["rupost-builtin"]
    # a mail deploy is not affected by the panel's certificate
    assert node.app.deploys.plan().changed == []
    service.activate("rupost-control-panel-builtin")
    service.remove(name)
    with pytest.raises(ConflictError, match="builtin certificate"):
        service.remove("rupost-builtin")
    assert "no certificate named 'nope'" in cli(node, "cert", "show", "nope").output


def test_builtin_regenerated_only_on_request(node, tmp_path):
    service = CertificateService(node.app)
    first = service.show("rupost-control-panel-builtin")
    assert service.show("rupost-control-panel-builtin")["sha256"] == first["sha256"]  # stable
    r = cli(node, "cert", "regenerate-builtin", "rupost-control-panel-builtin")
    assert r.exit_code == 0, r.output
    second = service.show("rupost-control-panel-builtin")
    assert second["sha256"] != first["sha256"] and second["active"] == first["active"]
    assert node.app.settings.mail_host() in second["names"]
    assert cli(node, "cert", "regenerate-builtin", "corp").exit_code == 2  # not a builtin name


# ------------------------------------------------------------------ expiry warnings
def test_expiry_warnings_in_status_and_monitor_log(node, pki, tmp_path):
    from rupost.node.agent import NodeAgent

    soon_key = ec.generate_private_key(ec.SECP256R1())
    soon = issue(pki.host, soon_key, pki.intermediate, pki.int_key, names=[pki.host], days=6)
    later_key = ec.generate_private_key(ec.SECP256R1())
    later = issue(pki.host, later_key, pki.intermediate, pki.int_key, names=[pki.host], days=21)
    far_key = ec.generate_private_key(ec.SECP256R1())
    far = issue(pki.host, far_key, pki.intermediate, pki.int_key, names=[pki.host], days=60)
    soon_name, _ = add(node, tmp_path, pem(soon, pki.intermediate), key_pem(soon_key))
    later_name, _ = add(node, tmp_path, pem(later, pki.intermediate), key_pem(later_key))
    far_name, _ = add(node, tmp_path, pem(far, pki.intermediate), key_pem(far_key))
    try:
        levels = {w["name"]: w["level"] for w in CertificateService(node.app).expiry_warnings()}
        assert levels[soon_name] == "critical" and levels[later_name] == "warning" and far_name not in levels
        # the same certificates seen from 80 days on: all expired
        future = NOW + dt.timedelta(days=80)
        assert {w["name"]: w["level"] for w in CertificateService(node.app).expiry_warnings(future)}[far_name] \
            == "expired"
        r = cli(node, "status")
        assert f"CERTIFICATE CRITICAL: certificate {soon_name} (mail) expires on" in r.output
        assert f"CERTIFICATE WARNING: certificate {later_name} (mail)" in r.output
        status = json.loads(cli(node, "status", "--json").output)
        assert soon_name in {w["name"] for w in status["certificate_warnings"]}
        r = cli(node, "cert", "warnings")
        assert r.exit_code == 2 and f"CRITICAL: certificate {soon_name}" in r.output
        agent = NodeAgent(node.app)
        agent.check_certificates()
        log = node.layout.monitor_log.read_text()
        assert f"certificate expiry_critical: certificate {soon_name} (mail) expires on" in log
        assert f"certificate expiry_warning: certificate {later_name}" in log
        lines = log.count(soon_name)
        agent.check_certificates(every=0)  # unchanged levels are not logged again
        assert node.layout.monitor_log.read_text().count(soon_name) == lines
    finally:
        for name in (soon_name, later_name, far_name):
            CertificateService(node.app).remove(name)


# ------------------------------------------------------------------ DH parameters
def _der_len(length: int) -> bytes:
    if length < 128:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_int(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big")
    return b"\x02" + _der_len(len(raw)) + raw


def _dh_pem(p: int, g: int = 2) -> str:
    """PKCS#3 DHParameter encoded by hand: OpenSSL refuses to build unsafe groups itself."""
    body = _der_int(p) + _der_int(g)
    b64 = base64.b64encode(b"\x30" + _der_len(len(body)) + body).decode()
    return "-----BEGIN DH PARAMETERS-----\n" + "\n".join(textwrap.wrap(b64, 64)) + "\n-----END DH PARAMETERS-----\n"


def _random_prime(bits: int) -> int:
    while True:
        n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
        if is_probable_prime(n, rounds=8):
            return n


def test_miller_rabin_against_known_values():
    assert all(is_probable_prime(p) for p in (2, 3, 5, 7919, 2 ** 127 - 1, 2 ** 521 - 1))
    # Carmichael numbers and a product of two large primes
    assert not any(is_probable_prime(n) for n in (1, 561, 41041, 825265, (2 ** 61 - 1) * (2 ** 89 - 1)))


def test_dhparam_import_validates_and_deploy_applies(node, tmp_path):
    service = DHParamService(node.app)
    ffdhe2048 = subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                                "group:ffdhe2048"], capture_output=True, text=True, check=True).stdout
    rejects = {
        "garbage.pem": ("hello", "holds no PEM DH parameters"),
        "small.pem": (_dh_pem(_random_prime(1024)), "the DH prime has 1024 bits: at least 2048"),
        "unsafe.pem": (_dh_pem(_random_prime(2048)), "is not a safe prime"),
        "composite.pem": (_dh_pem(_random_prime(1024) * _random_prime(1025)), "is not prime"),
        "broken.pem": ("-----BEGIN DH PARAMETERS-----\nAAAA\n-----END DH PARAMETERS-----\n", "cannot be parsed"),
    }
    before = service.list()
    for filename, (text, message) in rejects.items():
        path = tmp_path / filename
        path.write_text(text)
        r = cli(node, "dhparam", "import", str(path))
        assert r.exit_code == 1 and message in r.output, (filename, r.output)
    assert service.list() == before
    path = tmp_path / "rupost-builtin-dhparam.pem"  # the file name the guide uses
    path.write_text(ffdhe2048)
    r = cli(node, "dhparam", "import", str(path))
    assert r.exit_code == 0 and "2048 bits, safe prime" in r.output, r.output
    active = [d for d in service.list() if d["active"]]
    assert [d["name"] for d in active] == ["imported-rupost-builtin-dhparam.pem"]
    try:
        result = node.app.deploys.deploy()
        assert result.result == "applied" and {"nginx", "postfix", "dovecot"} <= set(result.reloaded)
        deployed = (node.layout.current / "tls" / "dhparam.pem").read_text()
        assert deployed.strip() == ffdhe2048.strip()
        r = subprocess.run(["openssl", "dhparam", "-in", str(node.layout.current / "tls" / "dhparam.pem"),
                            "-noout", "-text"], capture_output=True, text=True)
        assert "2048 bit" in r.stdout or "(2048 bit)" in r.stdout
    finally:
        assert cli(node, "dhparam", "activate", "rupost-builtin-dhparam.pem").exit_code == 0
        node.app.deploys.deploy()
    assert (node.layout.current / "tls" / "dhparam.pem").read_text() == FFDHE3072_PEM
    assert cli(node, "dhparam", "remove", "imported-rupost-builtin-dhparam.pem").exit_code == 0
    r = cli(node, "dhparam", "remove", "rupost-builtin-dhparam.pem")
    assert r.exit_code == 1 and "builtin fallback" in r.output


# ------------------------------------------------------------------ the builtin certificate's names
def test_builtin_certificate_names_follow_the_mail_host_and_the_hosted_domains(pg, tmp_path):
    """On an installation of its own (the session node's certificates stay as deployed)."""
    from rupost.config import DatabaseSettings
    from support.instance import Instance

    user = f"cn{uuid.uuid4().hex[:8]}"
    inst = Instance(tmp_path / "root", DatabaseSettings(host="127.0.0.1", port=pg.port, user=user,
                                                        password="names-pass-1", main=f"{user}_main",
                                                        data=f"{user}_data", logs=f"{user}_logs"),
                    node_name="cn1", fqdn="cn1.rupost.test", mail_host="mail.names.test")
    inst.configure()
    try:
        first = inst.app.certificates.show("rupost-builtin")
        assert first["subject"].endswith("CN=mail.names.test") and first["missing_names"] == []
        assert {"mail.names.test", "cn1.rupost.test", "127.0.0.1"} <= set(first["names"])
        r = cli(inst, "domains", "add", "shop.test")
        assert r.exit_code == 0
        assert ("note: the active mail certificate rupost-builtin does not cover autoconfig.shop.test, "
                "autodiscover.shop.test: `rupost cert regenerate-builtin rupost-builtin`") in r.output, r.output
        assert cli(inst, "domains", "add", "closed.test").exit_code == 0
        assert cli(inst, "domains", "disable", "closed.test").exit_code == 0
        shown = cli(inst, "cert", "show", "rupost-builtin").output
        assert "does not cover: autoconfig.shop.test, autodiscover.shop.test (`rupost cert regenerate-builtin" in shown
        # names are computed when the certificate is issued: the enabled domains of that moment
        r = cli(inst, "cert", "regenerate-builtin", "rupost-builtin")
        assert r.exit_code == 0 and "autodiscover.shop.test" in r.output, r.output
        again = inst.app.certificates.show("rupost-builtin")
        assert {"autoconfig.shop.test", "autodiscover.shop.test"} <= set(again["names"])
        assert not [n for n in again["names"] if "closed.test" in n] and again["missing_names"] == []
        # the control panel's certificate needs only the mail host name
        assert inst.app.certificates.show("rupost-control-panel-builtin")["missing_names"] == []
        # a new mail host name: what does not cover it is named, with the command that fixes it
        r = cli(inst, "settings", "mail-host", "mx.names.test")
        assert r.exit_code == 0
        for name in ("rupost-builtin", "rupost-control-panel-builtin"):
            assert (f"certificate {name} does not cover mx.names.test: `rupost cert regenerate-builtin {name}`"
                    in r.output), r.output
    finally:
        inst.stop()
