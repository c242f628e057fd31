"""Password hashes: mailboxes in the form Dovecot and SOGo verify, administrators in Argon2id.

Mailboxes: SHA512-CRYPT ({SHA512-CRYPT}$6$...) is understood by Dovecot's passdb and by
SOGo (userPasswordAlgorithm sha512-crypt with prependPasswordScheme), and costs a
few milliseconds, which keeps IMAP/SMTP authentication fast at scale.

Control panel administrators: only RuPost verifies their passwords, a few logins a day,
so they get Argon2id (memory-hard: a stolen ``panel_admins`` table costs an attacker
64 MiB per guess). Rows written before, in SHA512-CRYPT, still verify and are rehashed
at their next successful login.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings

import argon2

from .errors import ValidationError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # stdlib crypt(3) binding; glibc implements SHA512-CRYPT

SCHEME = "SHA512-CRYPT"
MIN_LENGTH = 8
MAX_LENGTH = 1024


def check_password_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValidationError(f"password is too short: at least {MIN_LENGTH} characters are required")
    if len(password) > MAX_LENGTH:
        raise ValidationError(f"password is too long: at most {MAX_LENGTH} characters")
    if any(ch in password for ch in "\x00\r\n"):
        raise ValidationError("password must not contain NUL or line breaks")


def hash_password(password: str) -> str:
    check_password_policy(password)
    return f"{{{SCHEME}}}" + crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512, rounds=5000))


def verify_password(password: str, stored: str) -> bool:
    """A mailbox password (SHA512-CRYPT) against its stored hash."""
    prefix = f"{{{SCHEME}}}"
    if not stored.startswith(prefix):
        return False
    import hmac

    hashed = stored[len(prefix):]
    return hmac.compare_digest(crypt.crypt(password, hashed), hashed)


ADMIN_SCHEME_PREFIX = "$argon2id$"


@functools.cache
def _argon2() -> argon2.PasswordHasher:
    # argon2-cffi's defaults are RFC 9106's second recommended profile: Argon2id,
    # t=3, m=64 MiB, p=4
    return argon2.PasswordHasher(type=argon2.Type.ID)


def hash_admin_password(password: str) -> str:
    """An administrator's password as an Argon2id PHC string ($argon2id$v=19$m=...)."""
    check_password_policy(password)
    return _argon2().hash(password)


@dataclasses.dataclass(frozen=True)
class AdminPasswordCheck:
    ok: bool
    rehash: bool = False  # right password in an old scheme or with old parameters: store a new hash


def verify_admin_password(password: str, stored: str) -> AdminPasswordCheck:
    """An administrator's password against its Argon2id hash, or an older SHA512-CRYPT one."""
    if stored.startswith(ADMIN_SCHEME_PREFIX):
        try:
            _argon2().verify(stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return AdminPasswordCheck(False)
        return AdminPasswordCheck(True, _argon2().check_needs_rehash(stored))
    ok = verify_password(password, stored)
    return AdminPasswordCheck(ok, rehash=ok)


@functools.cache
def dummy_admin_hash() -> str:
    """Checked when a login is unknown, so that it costs as much as a wrong password."""
    return _argon2().hash("rupost-dummy-password")
