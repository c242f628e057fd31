"""Interactive dialog screens of rupost-wizard (pythondialog)."""
from __future__ import annotations

import sys


def run_dialogs(root: str) -> int:
    print("rupost-wizard: the interactive dialog screens are not available in this version; "
          "run `rupost-wizard --silent` with the --db-* flags (see rupost-wizard --help)", file=sys.stderr)
    return 2
