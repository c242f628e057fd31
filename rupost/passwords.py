"""Password hashes for the local user directory, in the form Dovecot and SOGo verify.

SHA512-CRYPT ({SHA512-CRYPT}$6$...) is understood by Dovecot's passdb and by
SOGo (userPasswordAlgorithm sha512-crypt with prependPasswordScheme), and costs a
few milliseconds, which keeps IMAP/SMTP authentication fast at scale.
"""
from __future__ import annotations

import warnings

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
    prefix = f"{{{SCHEME}}}"
    if not stored.startswith(prefix):
        return False
    import hmac

    hashed = stored[len(prefix):]
    return hmac.compare_digest(crypt.crypt(password, hashed), hashed)
