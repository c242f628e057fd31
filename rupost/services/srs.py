"""The cluster's SRS secrets (component postsrsd, adapters/postsrsd.py).

One list in the ``settings`` table of ``rupost`` (``srs.secrets``), the signing secret
first: every node writes the same file, so an address one node signed is reversed by any
node the bounce reaches. The first read creates it (insert-if-absent: two nodes starting at
once agree on the one that was stored). postsrsd signs with the first line of its file and
verifies with all of them.

A rotation must not let one node sign with a secret another cannot verify yet (a bounce
may reach any node). ``rotate`` therefore stores the new secret as *pending*
(``srs.pending``) with a time from which it signs, ``PROMOTION_DELAY`` ahead: until then
every node verifies with it (last line) and signs with the current one; each node's agent
compares its file with the database at every tick and restarts its postsrsd when they
differ. From that time on the first reader moves it to the front of the list, keeping the
previous secrets for the addresses already handed out (valid for 21 days).
"""
from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from sqlalchemy.dialects.postgresql import insert

from ..db.models import Setting
from ..errors import ConflictError, ValidationError

if TYPE_CHECKING:
    from ..db.engine import Databases
    from . import Services

SRS_SECRETS = "srs.secrets"
SRS_PENDING = "srs.pending"
# longer than several agent ticks (10 s): every node verifies with a new secret before any signs with it
PROMOTION_DELAY = 60.0
# the signing secret and the previous ones that still verify
MAX_SECRETS = 4


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _checked(value: object) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(f"setting {SRS_SECRETS} is not a list of secrets: remove it and a new one is created")
    return list(value)


def srs_secrets(dbs: Databases, now: float | None = None) -> list[str]:
    """The lines of postsrsd's secrets file: the signing secret first, then the ones that
    only verify (the previous ones, and a pending one before its time)."""
    now = time.time() if now is None else now
    with dbs.session("main") as s:
        if s.get(Setting, SRS_SECRETS) is None:  # the agent reads at every tick: write only once
            s.execute(insert(Setting).values(key=SRS_SECRETS, value=[new_secret()])
                      .on_conflict_do_nothing(index_elements=["key"]))
    with dbs.session("main") as s:
        pending = s.get(Setting, SRS_PENDING, with_for_update=True)
        stored = s.get(Setting, SRS_SECRETS, with_for_update=True)
        current = _checked(stored.value if stored is not None else None)
        if pending is None:
            return current
        value = pending.value if isinstance(pending.value, dict) else {}
        secret, sign_from = str(value.get("secret") or ""), float(value.get("sign_from") or 0)
        if not secret:
            raise ValidationError(f"setting {SRS_PENDING} holds no secret: remove it (rupost srs rotate again)")
        if now < sign_from:
            return [*current, secret]
        stored.value = [secret, *current][:MAX_SECRETS]  # type: ignore[union-attr]
        s.delete(pending)
        return list(stored.value)  # type: ignore[union-attr]


class SrsService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def status(self) -> dict:
        """What an administrator may see: counts and times, never a secret."""
        lines = srs_secrets(self.app.dbs)
        pending = self.app.settings.get(SRS_PENDING)
        return {"domain": self.app.settings.mail_host(), "secrets": len(lines),
                "pending_signs_from": pending["sign_from"] if pending else None}

    def rotate(self, delay: float = PROMOTION_DELAY) -> dict:
        """A new secret that every node verifies with at once and signs with after `delay`."""
        srs_secrets(self.app.dbs)  # the list exists (and an earlier pending one is due or refused below)
        with self.app.dbs.session("main") as s:
            if s.get(Setting, SRS_PENDING, with_for_update=True) is not None:
                raise ConflictError("a rotation is already under way: the new secret signs once every node "
                                    "has it (rupost srs status)")
            sign_from = time.time() + delay
            s.add(Setting(key=SRS_PENDING, value={"secret": new_secret(), "sign_from": sign_from}))
        self.app.audit.record("srs.rotate", SRS_PENDING, signs_from=sign_from)
        self.reconcile()
        return self.status()

    def reconcile(self) -> bool:
        """Restart this node's postsrsd when its secrets file differs from the database (a
        rotation here or on another node); the node agent calls this at every tick."""
        runtime = self.app.component_runtime
        if "postsrsd" not in runtime.components or not runtime.is_running("postsrsd"):
            return False  # its next start writes the file
        from adapters.postsrsd import secrets_file

        path = secrets_file(runtime.live_context())
        try:
            on_disk = path.read_text().splitlines()
        except OSError:
            on_disk = []
        if on_disk == srs_secrets(self.app.dbs):
            return False
        from ..deploy.runtime import StepLog

        # its prepare step writes the file; back only once its tables accept connections
        runtime.restart(["postsrsd"], StepLog())
        return True
