"""The cluster's SRS secrets (component postsrsd, adapters/postsrsd.py).

One list in the ``settings`` table of ``rupost``, the signing secret first: every node
renders the same file, so an address one node signed is reversed by any node the bounce
reaches. The first read creates it (insert-if-absent: two nodes starting at once agree on
the one that was stored). postsrsd signs with the first secret and verifies with all of
them, so a rotation would put a new one first and keep the previous ones.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy.dialects.postgresql import insert

from ..db.models import Setting
from ..errors import ValidationError

if TYPE_CHECKING:
    from ..db.engine import Databases

SRS_SECRETS = "srs.secrets"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def srs_secrets(dbs: Databases) -> list[str]:
    with dbs.session("main") as s:
        s.execute(insert(Setting).values(key=SRS_SECRETS, value=[new_secret()])
                  .on_conflict_do_nothing(index_elements=["key"]))
    with dbs.session("main") as s:
        row = s.get(Setting, SRS_SECRETS)
        value = row.value if row is not None else None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(f"setting {SRS_SECRETS} is not a list of secrets: remove it and a new one is created")
    return list(value)
