"""Template features rendered only while something uses them.

Some parts of the configuration cost every message or every login even when nobody uses
them (dovecot's push plugins on each delivery, the post-login hook of impersonation on
each IMAP session). The template renders them only while the data asks for them (a push
endpoint, an impersonation account exists), which makes the first such row, and the
removal of the last, a configuration change: a deploy. These helpers say so.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Services


def live_on_this_node(app: Services, component: str, filename: str) -> bool:
    """Whether this node's live generation holds the file the feature renders."""
    return (app.layout.current / component / filename).is_file()


def deploy_hint(feature: str, wanted: bool, live: bool) -> str:
    """What the administrator must do so that the live configuration matches the data."""
    if wanted and not live:
        return (f"{feature} is not in this node's live configuration yet (it is rendered only while it is "
                "used): run `rupost deploy` (in a cluster, a rolling deploy) to turn it on")
    if live and not wanted:
        return (f"nothing uses {feature} any more: `rupost deploy` removes it from the live configuration "
                "(until then it stays, harmlessly)")
    return ""
