"""Builtin certificates and the default DH parameters (SPEC §8)."""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

# RFC 7919 ffdhe3072 (Appendix A.2), the named group the builtin dhparam uses:
# a published safe prime that cannot be back-doored and need not be generated.
# (Exported with `openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe3072`.)
FFDHE3072_PEM = """-----BEGIN DH PARAMETERS-----
MIIBiAKCAYEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEfz9zeNVs7ZRkDW7w09N75nAI4YbRvydbmyQd62R0mkff3
7lmMsPrBhtkcrv4TCYUTknC0EwyTvEN5RPT9RFLi103TZPLiHnH1S/9croKrnJ32
nuhtK8UiNjoNq8Uhl5sN6todv5pC1cRITgq80Gv6U93vPBsg7j/VnXwl5B0rZsYu
N///////////AgEC
-----END DH PARAMETERS-----
"""


def ffdhe_default() -> tuple[str, int]:
    p, _ = _parse_dh_pem(FFDHE3072_PEM)
    return FFDHE3072_PEM, p.bit_length()


def self_signed(common_name: str, alt_names: list[str], days: int = 3650) -> tuple[str, str, dt.datetime]:
    """A self-signed P-256 certificate for the builtin names; returns (cert_pem, key_pem, not_after)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RuPost builtin")])
    sans: list[x509.GeneralName] = []
    for alt in dict.fromkeys([common_name, *alt_names]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(alt)))
        except ValueError:
            sans.append(x509.DNSName(alt))
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem, not_after


# ------------------------------------------------------------------ imported certificates
# What RuPost accepts as a TLS server certificate (docs/security.md):
# - RSA keys of at least 2048 bits, ECDSA keys on P-256 or P-384. Ed25519/Ed448
#   server certificates are refused: the browsers and most mail clients (Outlook,
#   Thunderbird/NSS, Apple Mail) cannot verify them, so a panel or IMAPS port using
#   one would be unusable. DSA and P-521 are refused for the same reason.
# - the certificate file holds the leaf first, then each issuer in order; each
#   certificate must be signed by the next one. The chain may end with the root or
#   stop before it (the usual practice: clients know the root); what is an error is
#   a gap, i.e. a certificate followed by one that did not issue it.
MIN_RSA_BITS = 2048
ACCEPTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
WEAK_SIGNATURE_HASHES = {"md5", "sha1"}


@dataclass
class CertificateInfo:
    """What the core knows about a validated chain (shown by `rupost cert show`)."""

    cert_pem: str  # normalised: leaf first, then the chain, PEM
    key_pem: str  # PKCS#8, unencrypted
    subject: str
    issuer: str
    names: list[str]
    key_type: str
    not_before: dt.datetime
    not_after: dt.datetime  # of the leaf
    chain_not_after: dt.datetime  # earliest expiry of the whole chain: when it stops working
    serial: str
    sha256: str
    chain: list[str]  # subjects, leaf first
    warnings: list[str] = field(default_factory=list)


def _load_pem_certificates(text: str, what: str) -> list[x509.Certificate]:
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{what} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')")
    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise ValueError(f"{what} is not a valid PEM certificate: {exc}") from None
    if not certs:
        raise ValueError(f"{what} holds no PEM certificate")
    return certs


def load_private_key(text: str, what: str = "the key file"):
    if "PRIVATE KEY-----" not in text:
        raise ValueError(f"{what} holds no PEM private key (expected '-----BEGIN ... PRIVATE KEY-----')")
    if "ENCRYPTED" in text:
        raise ValueError(f"{what} is encrypted with a passphrase: the mail daemons start unattended, "
                         "decrypt it first (openssl pkey -in KEY -out KEY.plain)")
    try:
        return serialization.load_pem_private_key(text.encode(), password=None)
    except TypeError:
        raise ValueError(f"{what} is encrypted with a passphrase: decrypt it first "
                         "(openssl pkey -in KEY -out KEY.plain)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{what} is not a valid PEM private key: {exc}") from None


def describe_key(key) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA {key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"EC {ACCEPTED_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519"
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "Ed448"
    if isinstance(key, (dsa.DSAPrivateKey, dsa.DSAPublicKey)):
        return f"DSA {key.key_size}"
    return type(key).__name__


def check_key_strength(public_key, what: str) -> None:
    kind = describe_key(public_key)
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{what} has a {kind}-bit key: RSA keys must have at least {MIN_RSA_BITS} bits")
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ACCEPTED_CURVES:
            raise ValueError(f"{what} uses the elliptic curve {public_key.curve.name}: only P-256 and P-384 "
                             "are accepted (what every TLS client supports)")
        return
    raise ValueError(f"{what} has an {kind} key: TLS server certificates must use RSA (>= {MIN_RSA_BITS} bits) "
                     "or ECDSA (P-256, P-384); Ed25519/Ed448 and DSA are not accepted by common mail "
                     "clients and browsers")


def _public_bytes(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _label(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


def certificate_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))]


def name_matches(pattern: str, host: str) -> bool:
    """RFC 6125: exact match, or a wildcard in the leftmost label covering exactly one label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:] and pattern.count(".") >= 2
    return False


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _signature_hash(cert: x509.Certificate) -> str:
    try:
        algo = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return "unknown"
    return algo.name if algo is not None else "none"


def validate_certificate(cert_text: str, key_text: str, hostnames: list[str],
                         now: dt.datetime | None = None) -> CertificateInfo:
    """Check an uploaded certificate chain and key; raise ValueError naming the problem."""
    now = now or dt.datetime.now(dt.UTC)
    certs = _load_pem_certificates(cert_text, "the certificate file")
    key = load_private_key(key_text)
    leaf = certs[0]
    _check_leaf_comes_first(leaf)
    check_key_strength(key.public_key(), "the private key")
    _check_key_matches_leaf(key, certs)
    _check_validity(certs, now)
    _check_chain_order(certs)
    _check_signature_hashes(certs)
    _check_server_auth(leaf)
    names = _check_names(leaf, hostnames)
    return _certificate_info(certs, key, names)


def _check_leaf_comes_first(leaf: x509.Certificate) -> None:
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca and not _is_self_signed(leaf):
            raise ValueError(f"the first certificate ({_label(leaf)}) is a CA certificate: the file must start "
                             "with the server's own certificate, followed by its chain")
    except x509.ExtensionNotFound:
        pass


def _check_key_matches_leaf(key, certs: list[x509.Certificate]) -> None:
    leaf = certs[0]
    if _public_bytes(key.public_key()) == _public_bytes(leaf.public_key()):
        return
    for i, cert in enumerate(certs[1:], start=2):
        if _public_bytes(cert.public_key()) == _public_bytes(key.public_key()):
            raise ValueError(f"the private key belongs to certificate {i} of the file ({_label(cert)}): "
                             "the server's own certificate must come first, then its chain")
    raise ValueError(f"the private key does not match the certificate {_label(leaf)} (the key is "
                     f"{describe_key(key)}, the certificate's public key is {describe_key(leaf.public_key())}"
                     f"{'' if describe_key(key) != describe_key(leaf.public_key()) else ', a different key'})")


def _check_validity(certs: list[x509.Certificate], now: dt.datetime) -> None:
    for i, cert in enumerate(certs):
        what = "the certificate" if i == 0 else f"chain certificate {i + 1} ({_label(cert)})"
        if cert.not_valid_after_utc <= now:
            raise ValueError(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M UTC}")
        if cert.not_valid_before_utc > now:
            raise ValueError(f"{what} is not valid yet: its validity starts on "
                             f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M UTC}")
        if i > 0:
            check_key_strength(cert.public_key(), what)


def _check_chain_order(certs: list[x509.Certificate]) -> None:
    """Each certificate is followed by its issuer, a CA whose key signed it."""
    for i in range(len(certs) - 1):
        child, parent = certs[i], certs[i + 1]
        if child.issuer != parent.subject:
            raise ValueError(f"the chain is incomplete or out of order: certificate {i + 1} ({_label(child)}) was "
                             f"issued by {child.issuer.rfc4514_string()}, but certificate {i + 2} is "
                             f"{_label(parent)}; put the leaf first, then each issuer in order, without gaps")
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError(f"certificate {i + 1} ({_label(child)}) is not signed by the key of certificate "
                             f"{i + 2} ({_label(parent)}) although the names match") from None
        try:
            pbc = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = pbc.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ValueError(f"chain certificate {i + 2} ({_label(parent)}) is not a CA certificate "
                             "(basicConstraints CA:TRUE missing)")


def _check_signature_hashes(certs: list[x509.Certificate]) -> None:
    for i, cert in enumerate(certs):
        if _is_self_signed(cert):
            continue  # a root's own signature is never checked by clients
        if _signature_hash(cert) in WEAK_SIGNATURE_HASHES:
            raise ValueError(f"certificate {i + 1} ({_label(cert)}) is signed with {_signature_hash(cert).upper()}, "
                             "which clients reject: have it reissued with SHA-256")


def _check_server_auth(leaf: x509.Certificate) -> None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if x509.oid.ExtendedKeyUsageOID.SERVER_AUTH not in eku:
            raise ValueError("the certificate's extended key usage does not include TLS server authentication "
                             "(serverAuth)")
    except x509.ExtensionNotFound:
        pass


def _check_names(leaf: x509.Certificate, hostnames: list[str]) -> list[str]:
    """The certificate's names, which must cover every one of ``hostnames``."""
    names = certificate_names(leaf)
    if not names:
        raise ValueError(f"the certificate {_label(leaf)} has no subjectAltName: clients ignore the common name, "
                         f"it must list {', '.join(hostnames)}")
    missing = [h for h in hostnames if not any(name_matches(n, h) for n in names)]
    if missing:
        raise ValueError(f"the certificate does not cover {', '.join(missing)} (its names: {', '.join(names)}); "
                         "issue it for the mail host name, or change the mail host setting")
    return names


def _certificate_info(certs: list[x509.Certificate], key, names: list[str]) -> CertificateInfo:
    leaf, last = certs[0], certs[-1]
    warnings = []
    if not _is_self_signed(last):
        warnings.append(f"the chain ends at {_label(last)}; clients must already trust its issuer "
                        f"{last.issuer.rfc4514_string()}")
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return CertificateInfo(
        cert_pem=pem, key_pem=key_pem, subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
        names=names, key_type=describe_key(leaf.public_key()), not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc, chain_not_after=min(c.not_valid_after_utc for c in certs),
        serial=f"{leaf.serial_number:x}", sha256=leaf.fingerprint(hashes.SHA256()).hex(":"),
        chain=[_label(c) for c in certs], warnings=warnings)


def describe_stored(cert_pem: str) -> dict:
    """Facts about a stored chain for `cert show` (no validation: it was validated on import)."""
    certs = x509.load_pem_x509_certificates(cert_pem.encode())
    leaf = certs[0]
    return {"subject": leaf.subject.rfc4514_string(), "issuer": leaf.issuer.rfc4514_string(),
            "names": certificate_names(leaf), "key_type": describe_key(leaf.public_key()),
            "not_before": leaf.not_valid_before_utc.isoformat(), "not_after": leaf.not_valid_after_utc.isoformat(),
            "serial": f"{leaf.serial_number:x}", "sha256": leaf.fingerprint(hashes.SHA256()).hex(":"),
            "chain": [_label(c) for c in certs]}


# ------------------------------------------------------------------ DH parameters
MIN_DH_BITS = 2048
_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % d for d in range(3, int(p ** 0.5) + 1, 2))]


def is_probable_prime(n: int, rounds: int = 24) -> bool:
    """Miller-Rabin with random bases: a composite passes with probability below 4**-rounds."""
    import secrets

    if n < 2:
        return False
    if n in (2, 3):
        return True
    if n % 2 == 0:
        return False
    for p in _SMALL_PRIMES:
        if n == p:
            return True
        if n % p == 0:
            return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(rounds):
        a = 2 + secrets.randbelow(n - 3)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def validate_dhparam(text: str) -> tuple[str, int]:
    """Check PEM DH parameters: size >= 2048 and a safe prime; return (normalised PEM, bits)."""
    if "-----BEGIN DH PARAMETERS-----" not in text and "-----BEGIN X9.42 DH PARAMETERS-----" not in text:
        raise ValueError("the file holds no PEM DH parameters (expected '-----BEGIN DH PARAMETERS-----', "
                         "as written by `openssl dhparam`)")
    try:
        p, g = _parse_dh_pem(text)
    except ValueError as exc:
        raise ValueError(f"the DH parameters cannot be parsed: {exc}") from None
    bits = p.bit_length()
    if bits < MIN_DH_BITS:
        raise ValueError(f"the DH prime has {bits} bits: at least {MIN_DH_BITS} are required "
                         "(generate with `openssl dhparam -out FILE 4096`)")
    if not (1 < g < p - 1):
        raise ValueError(f"the DH generator {g} is out of range")
    if not is_probable_prime(p):
        raise ValueError(f"the DH modulus p ({bits} bits) is not prime")
    if not is_probable_prime((p - 1) // 2):
        raise ValueError(f"the DH modulus p ({bits} bits) is not a safe prime: (p-1)/2 is not prime, so small "
                         "subgroups can be forced; generate with `openssl dhparam` or use an RFC 7919 group")
    return pkcs3_dhparam_pem(p, g), bits


def _parse_dh_pem(text: str) -> tuple[int, int]:
    """(p, g) from PKCS#3 'DH PARAMETERS' or X9.42 'X9.42 DH PARAMETERS' PEM.

    Parsed here rather than by cryptography: newer releases refuse to load weak
    groups at all, and the administrator must be told *why* a file is refused."""
    import base64
    import re

    match = re.search(r"-----BEGIN (?:X9\.42 )?DH PARAMETERS-----(.*?)-----END (?:X9\.42 )?DH PARAMETERS-----",
                      text, re.S)
    if not match:
        raise ValueError("no PEM block")
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
    except ValueError:
        raise ValueError("the PEM block is not valid base64") from None

    def read(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
        if pos + 2 > len(data) or data[pos] != tag:
            raise ValueError("not a DER DH parameters structure")
        length, pos = data[pos + 1], pos + 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or pos + count > len(data):
                raise ValueError("bad DER length")
            length, pos = int.from_bytes(data[pos:pos + count], "big"), pos + count
        if pos + length > len(data):
            raise ValueError("truncated DER")
        return data[pos:pos + length], pos + length

    body, end = read(der, 0, 0x30)
    if end != len(der):
        raise ValueError("trailing data after the DH parameters")
    raw_p, pos = read(body, 0, 0x02)
    raw_g, _ = read(body, pos, 0x02)
    return int.from_bytes(raw_p, "big"), int.from_bytes(raw_g, "big")


def _der_length(length: int) -> bytes:
    if length < 128:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def pkcs3_dhparam_pem(p: int, g: int) -> str:
    """PKCS#3 'DH PARAMETERS' (what `openssl dhparam` writes and every daemon reads). Written
    by hand because cryptography re-encodes a group it recognises as X9.42, which
    PEM_read_DHparams in postfix and nginx does not read."""
    import base64
    import textwrap

    def integer(n: int) -> bytes:
        raw = n.to_bytes(n.bit_length() // 8 + 1, "big")
        return b"\x02" + _der_length(len(raw)) + raw

    body = integer(p) + integer(g)
    b64 = base64.b64encode(b"\x30" + _der_length(len(body)) + body).decode()
    return "-----BEGIN DH PARAMETERS-----\n" + "\n".join(textwrap.wrap(b64, 64)) + "\n-----END DH PARAMETERS-----\n"
