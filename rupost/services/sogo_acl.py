"""SOGo's folder ACLs through its own tool (``sogo-tool manage-acl``), run with the node's
deployed SOGo configuration: calendar resources and delegated calendars both grant roles on a
user's folder this way, and SOGo keeps the result in its own ACL table."""
from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

from ..errors import RuPostError

if TYPE_CHECKING:
    from . import Services


class SogoAclError(RuPostError):
    pass


def manage_acl(app: Services, action: str, owner: str, folder: str, user: str,
               roles: list[str] | None = None) -> str:
    """`sogo-tool manage-acl ACTION OWNER FOLDER USER [ROLES]`; its output, or SogoAclError
    with the tool's last line (a folder that does not exist yet says "No folder")."""
    from adapters.sogo import sogo_tool_command

    conf_dir = app.layout.current / "sogo"
    if not (conf_dir / "sogo.conf").exists():
        raise SogoAclError("no SOGo configuration deployed on this node (rupost deploy)")
    args = ["manage-acl", action, owner, folder, user] + ([json.dumps(roles)] if roles else [])
    argv, env = sogo_tool_command(conf_dir, args, app.config.database)
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SogoAclError(f"sogo-tool manage-acl failed: {exc}") from None
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0 or "No folder" in text:
        raise SogoAclError(f"sogo-tool manage-acl {action} {user} on {owner}'s {folder}: "
                           f"{text.splitlines()[-1] if text else out.returncode}")
    return text
